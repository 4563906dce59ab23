"""Several server.listen addresses: each gets its own port and serves the same routes."""
import json
import unittest

from harness import Client, ProxyTestCase


class SeveralListeners(ProxyTestCase):
    PROXY_SECTIONS = {"server": {"listen": ["127.0.0.1:0", "127.0.0.1:0"], "threads": 2}}

    def test_every_listen_address_serves(self):
        with open(self.proxy.ready_file) as f:
            listen = json.load(f)["listen"]
        self.assertEqual(len(listen), 2)
        self.assertNotEqual(listen[0], listen[1])
        for i, addr in enumerate(listen):
            host, port = addr.rsplit(":", 1)
            self.proxy.host, self.proxy.port = host, int(port)
            m = self.mark()
            c = Client(self.proxy, "alice")
            try:
                r = c.request("GET", f"/owa/?marker={m}")
            finally:
                c.close()
            self.assertEqual(r.status, 200, (addr, r))
            self.assertEqual(self.backend_saw(m)[0]["identity"], "alice@lab.test")


if __name__ == "__main__":
    unittest.main()
