"""Offline checks of the compose stack (there is no Docker engine on the build machines).

1. docker-compose.yml against the compose-spec JSON schema (check-jsonschema's vendored copy),
   and a planted mistake must fail the same check;
2. every name one part uses for another resolves: services in depends_on and URLs, volumes,
   bind-mounted files, .env variables, ports on 127.0.0.1, health checks, the paths the
   worker, Logstash and Kibana are configured with against what the volumes and the image hold.

Run by scripts/test.sh in the environment of scripts/compose/requirements.txt:
    python -m unittest -v test_compose   (from scripts/compose)
"""

import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import unittest
from pathlib import Path
from urllib.parse import urlparse

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def load_compose(path=COMPOSE):
    return YAML(typ="safe").load(path.read_text())


def check_jsonschema(path):
    exe = Path(sys.executable).with_name("check-jsonschema")
    cmd = [str(exe) if exe.exists() else shutil.which("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True)


def env_example():
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def mounts(service):
    """(source, target, kind) of each volume entry: kind is 'volume' or 'bind'."""
    out = []
    for v in service.get("volumes", []):
        src, target = v.split(":")[:2]
        out.append((src, target, "bind" if src.startswith(".") or src.startswith("/") else "volume"))
    return out


def mounted_volume(service, path):
    """(volume or bind source, path inside it, kind) of the mount that holds `path`."""
    best = None
    for src, target, kind in mounts(service):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            if best is None or len(target) > len(best[1]):
                best = (src, target, kind)
    if best is None:
        return (None, path, None)  # not mounted: compares unequal to any expected volume
    return best[0], path[len(best[1]):].lstrip("/"), best[2]


class ComposeSchema(unittest.TestCase):
    def test_the_file_follows_the_compose_spec(self):
        r = check_jsonschema(COMPOSE)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_a_planted_mistake_fails_the_same_check(self):
        text = COMPOSE.read_text().replace("    healthcheck:\n", "    healthchek:\n", 1)
        with tempfile.TemporaryDirectory() as d:
            bad = Path(d) / "docker-compose.yml"
            bad.write_text(text)
            r = check_jsonschema(bad)
        self.assertNotEqual(r.returncode, 0, "a misspelt key passed the schema")
        self.assertIn("healthchek", r.stdout + r.stderr)


class ComposeNames(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = load_compose()
        cls.services = cls.c["services"]
        cls.worker_cfg = tomllib.loads((ROOT / "scripts/compose/apiwatch.toml").read_text())
        cls.dockerfile = (ROOT / "worker/Dockerfile").read_text()

    def host_of(self, url):
        u = urlparse(url)
        self.assertIn(u.hostname, self.services, f"{url} names no service")
        return u.hostname, u.port

    def test_depends_on_names_services_and_conditions_they_can_meet(self):
        for name, s in self.services.items():
            for dep, how in (s.get("depends_on") or {}).items():
                self.assertIn(dep, self.services, f"{name} depends on unknown {dep}")
                cond = how["condition"]
                if cond == "service_healthy":
                    self.assertIn("healthcheck", self.services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck")
                if cond == "service_completed_successfully":
                    self.assertNotIn("restart", self.services[dep], f"{dep} is a one-shot job; it must not restart")

    def test_every_long_running_service_has_a_health_check(self):
        for name, s in self.services.items():
            if "restart" in s:
                self.assertIn("healthcheck", s, name)

    def test_ports_are_published_on_localhost_only(self):
        for name, s in self.services.items():
            for p in s.get("ports", []):
                self.assertTrue(str(p).startswith("127.0.0.1:"), f"{name} publishes {p} on every interface")

    def test_volumes_are_declared_and_bind_mounts_exist(self):
        declared = set(self.c.get("volumes") or {})
        for name, s in self.services.items():
            for src, target, kind in mounts(s):
                if kind == "volume":
                    self.assertIn(src, declared, f"{name} mounts undeclared volume {src}")
                else:
                    self.assertTrue((ROOT / src).exists(), f"{name} mounts {src}, which is not in the repository")

    def test_variables_come_from_env_example_or_have_defaults(self):
        known = env_example()
        text = COMPOSE.read_text()
        for m in re.finditer(r"(?<!\$)\$\{([A-Z_]+)(:?[-?])?([^}]*)\}", text):
            var, op = m.group(1), m.group(2)
            if op in (None, ":?", "?"):
                self.assertIn(var, known, f"${{{var}}} is required but .env.example does not set it")
        self.assertGreaterEqual(len(known.get("KIBANA_ENCRYPTION_KEY", "")), 32)
        for secret in ("ELASTIC_PASSWORD", "KIBANA_PASSWORD"):
            self.assertIn(f"${{{secret}:?", text, f"{secret} must be required, not defaulted")

    def test_security_is_on(self):
        env = self.services["elasticsearch"]["environment"]
        self.assertEqual(env["xpack.security.enabled"], "true")
        self.assertEqual(env["xpack.security.http.ssl.enabled"], "true")
        for key in ("xpack.security.http.ssl.key", "xpack.security.http.ssl.certificate", "xpack.security.http.ssl.certificate_authorities"):
            # Relative to the ES config directory, inside the certs volume setup-es writes.
            where = mounted_volume(self.services["elasticsearch"], "/usr/share/elasticsearch/config/" + env[key])
            self.assertEqual(where[0], "certs", key)

    def test_the_worker_config_points_at_the_stack(self):
        es = self.worker_cfg["elasticsearch"]
        host, port = self.host_of(es["url"])
        self.assertEqual((host, port), ("elasticsearch", 9200))
        self.assertEqual(urlparse(es["url"]).scheme, "https")
        for svc in ("worker", "setup-apiwatch", "setup-kibana"):
            s = self.services[svc]
            self.assertIn("/etc/apiwatch/apiwatch.toml", s["command"])
            self.assertEqual(mounted_volume(s, "/etc/apiwatch/apiwatch.toml")[0], "./scripts/compose/apiwatch.toml")
            self.assertEqual(mounted_volume(s, es["ca_cert"])[:2], ("certs", "ca/ca.crt"), svc)
            self.assertEqual(s["environment"]["APIWATCH_ES_USERNAME"], "elastic")
        # setup-es writes the CA where the worker reads it.
        setup = (ROOT / "scripts/compose/setup-es.sh").read_text()
        self.assertIn('"$certs/ca/ca.crt"', setup)
        self.assertEqual(mounted_volume(self.services["setup-es"], "/usr/share/elasticsearch/config/certs/ca/ca.crt")[:2], ("certs", "ca/ca.crt"))
        email = self.worker_cfg["email"]
        self.assertIn(email["smtp_host"], self.services)
        self.assertEqual(str(email["smtp_port"]), self.services[email["smtp_host"]]["environment"]["MAILDEV_SMTP_PORT"])
        kibana = self.services["setup-kibana"]["command"]
        self.assertEqual(self.host_of(kibana[kibana.index("--kibana") + 1]), ("kibana", 5601))
        self.assertEqual(urlparse(es["kibana_url"]).port, int(env_example()["KIBANA_PORT"]))

    def test_the_image_holds_what_the_worker_config_names(self):
        models = self.worker_cfg["models"]
        self.assertIn(f"COPY onnx-models {models['dir']}", self.dockerfile)
        self.assertIn(f" {models['runtime']}\n", self.dockerfile)
        version = re.search(r"^version=(\S+)", (ROOT / "scripts/onnxruntime.sh").read_text(), re.M).group(1)
        self.assertIn(f"libonnxruntime.so.{version}", models["runtime"])
        for src in re.findall(r"^COPY (?!--from)(.+) \S+$", self.dockerfile, re.M):
            for part in src.split():
                self.assertTrue((ROOT / part).exists(), f"the Dockerfile copies {part}, which is not in the repository")
        for svc in ("worker", "setup-apiwatch", "setup-kibana", "simulator"):
            self.assertEqual(self.services[svc]["build"]["dockerfile"], "worker/Dockerfile")

    def test_logstash_reads_what_the_simulator_writes_and_writes_to_the_stack(self):
        ls = self.services["logstash"]
        env = ls["environment"]
        self.assertEqual(self.host_of(env["ES_HOSTS"]), ("elasticsearch", 9200))
        self.assertEqual(mounted_volume(ls, env["ES_CA"])[:2], ("certs", "ca/ca.crt"))
        log_dir = env["APIWATCH_LOG_GLOB"].rsplit("/", 1)[0]
        sim = self.services["simulator"]
        self.assertEqual(mounted_volume(ls, log_dir)[0], mounted_volume(sim, log_dir)[0])
        simulate = (ROOT / "scripts/compose/simulate.sh").read_text()
        self.assertIn(f"dir={log_dir}\n", simulate)
        self.assertRegex(simulate, r'\.log"')  # finished files end in .log (the glob), partial ones do not
        pipeline = (ROOT / "logstash/pipeline/apiwatch.conf").read_text()
        patterns = re.search(r'patterns_dir => \["([^"]+)"\]', pipeline).group(1)
        self.assertEqual(mounted_volume(ls, patterns)[0], "./logstash/patterns")
        pipelines = YAML(typ="safe").load((ROOT / "logstash/config/pipelines.yml").read_text())
        conf = pipelines[0]["path.config"]
        src, inside, _ = mounted_volume(ls, conf)
        self.assertTrue((ROOT / src / inside).is_file(), conf)
        # The health check asks for the pipeline by the id pipelines.yml gives it.
        self.assertIn(pipelines[0]["pipeline.id"], " ".join(ls["healthcheck"]["test"]))

    def test_kibana_connects_as_kibana_system_with_the_ca(self):
        k = self.services["kibana"]["environment"]
        self.assertEqual(self.host_of(k["ELASTICSEARCH_HOSTS"]), ("elasticsearch", 9200))
        self.assertEqual(k["ELASTICSEARCH_USERNAME"], "kibana_system")
        ca = "/usr/share/kibana/" + k["ELASTICSEARCH_SSL_CERTIFICATEAUTHORITIES"]
        self.assertEqual(mounted_volume(self.services["kibana"], ca)[:2], ("certs", "ca/ca.crt"))


if __name__ == "__main__":
    unittest.main()
