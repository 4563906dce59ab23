#!/usr/bin/env python3
"""docker_compose_builds_once: docker/compose.yaml (every profile) builds each image once.

  compose_builds_once.py COMPOSE_FILE

Reads `docker-compose config` (anchors, variables and profiles resolved) and checks that every
image is built by exactly one service, that every other service naming it depends on that
service, directly or through others (docker-compose 1.x creates services in dependency order and would try to pull an image
not built yet), and that no service names an image nobody builds (there is no registry to pull
it from).
"""
import subprocess
import sys

import yaml


def main() -> int:
    compose_file = sys.argv[1]
    with open(compose_file, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    profiles = sorted({p for svc in raw["services"].values() for p in svc.get("profiles", [])})
    args = [a for p in profiles for a in ("--profile", p)]
    out = subprocess.run(["docker-compose", "-f", compose_file, *args, "config"],
                         check=True, capture_output=True, text=True).stdout
    services = yaml.safe_load(out)["services"]

    def depends(name: str, seen: set[str]) -> set[str]:
        """Every service NAME depends on, directly or through others."""
        for dep in services[name].get("depends_on") or {}:
            if dep not in seen:
                seen.add(dep)
                depends(dep, seen)
        return seen
    builders: dict[str, list[str]] = {}
    for name, svc in services.items():
        if "build" in svc:
            builders.setdefault(svc.get("image", f"<{name}>"), []).append(name)
    problems = []
    for image, names in builders.items():
        if len(names) != 1:
            problems.append(f"image {image} is built by {len(names)} services: {', '.join(names)}")
    for name, svc in services.items():
        if "build" in svc:
            continue
        image = svc.get("image")
        if image not in builders:
            problems.append(f"service {name}: image {image} is built by no service")
            continue
        builder = builders[image][0]
        if builder not in depends(name, set()):
            problems.append(f"service {name}: uses {image} but does not depend on {builder}, which builds it")
    for p in problems:
        print(f"docker_compose_builds_once: {p}", file=sys.stderr)
    if not problems:
        print(f"docker_compose_builds_once: ok ({', '.join(f'{i} by {n[0]}' for i, n in builders.items())})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
