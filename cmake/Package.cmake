# `cpack -G DEB` in the build directory makes cbagate_<version>_<arch>.deb: the binary, the
# systemd unit, /etc/cbagate/cbagate.toml (a conffile: an upgrade never overwrites an edited
# copy) and the docs. tests/integration/package checks it (dpkg -x into a scratch root, lintian).
include(GNUInstallDirs)

install(TARGETS cbagate RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(FILES ${PROJECT_SOURCE_DIR}/config/systemd/cbagate.service DESTINATION /lib/systemd/system)
install(FILES ${PROJECT_SOURCE_DIR}/config/cbagate.toml DESTINATION /etc/cbagate
        PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/docs/revocation.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${PROJECT_SOURCE_DIR}/config/debian/copyright DESTINATION ${CMAKE_INSTALL_DOCDIR})
# Debian wants a compressed changelog in every package's doc folder.
set(changelog_gz ${CMAKE_BINARY_DIR}/package/changelog.Debian.gz)
add_custom_command(OUTPUT ${changelog_gz}
  COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/package
  COMMAND gzip -9n -c ${PROJECT_SOURCE_DIR}/config/debian/changelog > ${changelog_gz}
  DEPENDS ${PROJECT_SOURCE_DIR}/config/debian/changelog VERBATIM)
add_custom_target(package_changelog ALL DEPENDS ${changelog_gz})
install(FILES ${changelog_gz} DESTINATION ${CMAKE_INSTALL_DOCDIR})

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME cbagate)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "cbagate maintainers <cbagate@example.org>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "client-certificate authentication proxy for Microsoft Exchange")
set(CPACK_PACKAGE_DESCRIPTION
  "cbagate terminates TLS at the network edge, authenticates users of Outlook on the web, the
Exchange admin center and ActiveSync by their client certificate, and forwards each request to
Exchange as that user, with an identity header or Kerberos constrained delegation.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# dpkg-shlibdeps writes a dependency for each shared library the binary needs, with the version
# from that library's shlibs file: libssl3, libkrb5-3, ..., and libmimalloc2.0 (>= 2.0.9+ds) when
# cbagate is linked with mimalloc (PROXY_MIMALLOC); tests/integration/package checks both.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://example.org/cbagate")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${PROJECT_SOURCE_DIR}/config/debian/conffiles
  ${PROJECT_SOURCE_DIR}/config/debian/postinst
  ${PROJECT_SOURCE_DIR}/config/debian/prerm
  ${PROJECT_SOURCE_DIR}/config/debian/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
