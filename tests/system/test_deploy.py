"""The deployment files agree with the server and with each other: the image's
command line, FAF's Kubernetes manifests, the compose service, the systemd unit
and the Grafana dashboard. (tests/system/test_image.py builds and runs the image.)"""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from prometheus_client import REGISTRY
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

import faf_replay
import faf_replay.metrics  # registers every metric of the server
from faf_replay.server.options import Options
from faf_replay.settings import Settings
from tests.support.paths import REPOSITORY
from tests.support.processes import run_twistd

ROOT = REPOSITORY
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
#: The command of the image: twistd in the foreground, no pid file, no option.
ENTRYPOINT = ["twistd", "-n", "--pidfile=", "faf-replay"]
#: The least grace period (seconds) the deployments give the server to save
#: every running game after SIGTERM: a save waits up to db_timeout for the
#: database, and thousands of saves take seconds more.
MINIMUM_GRACE = 60
#: FAF's production settings as the Rust server had them (tests/data/faf-production).
FAF_CONFIG = ROOT / "tests" / "data" / "faf-production" / "config.yaml"

# --- reading the files -------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (word.upper(), rest.strip())
        for word, _, rest in (line.partition(" ") for line in lines if line and not line.startswith("#"))
    ]


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last = max(i for i, (word, _) in enumerate(instructions) if word == "FROM")
    return instructions[last:]


def dockerfile_command() -> tuple[list[str], list[str]]:
    """The final stage's ENTRYPOINT and CMD (empty when there is none)."""
    stage = dict(final_stage())
    return json.loads(stage["ENTRYPOINT"]), json.loads(stage.get("CMD", "[]"))


def unit_command() -> list[str]:
    text = (DEPLOY / "faf-replay.service").read_text()
    return shlex.split(re.search(r"^ExecStart=(.*)$", text, re.M).group(1))


def render(template: Path) -> str:
    """The Helm template as Helm would render it, for the two expressions FAF's
    chart uses; any other expression is an error, so none goes unchecked."""
    text = template.read_text()
    config = (KUBERNETES / "config" / "config.yaml").read_text()
    text = re.sub(
        r'\{\{ *tpl *\( *\.Files\.Get "config/config\.yaml" *\) *\. *\| *indent 4 *\}\}',
        lambda _: "\n".join("    " + line if line else line for line in config.splitlines()),
        text,
    )
    text = re.sub(r"\{\{ *\.Values\.baseDomain *\}\}", "example.org", text)
    if "{{" in text:
        raise AssertionError(f"{template.name}: a template expression the test cannot render")
    return text


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object of deploy/kubernetes/templates, by kind."""
    objects: dict[str, dict[str, Any]] = {}
    for template in sorted((KUBERNETES / "templates").glob("*.yaml")):
        for document in yaml.safe_load_all(render(template)):
            if document is not None:
                assert document["kind"] not in objects, document["kind"]
                objects[document["kind"]] = document
    return objects


def production_config() -> dict[str, Any]:
    """The YAML settings of the ConfigMap, as the pod reads them."""
    configmap = manifests()["ConfigMap"]
    return yaml.safe_load(configmap["data"]["config.yaml"])


def configmap_environment() -> dict[str, str]:
    """The variables the ConfigMap gives the container (envFrom)."""
    data = manifests()["ConfigMap"]["data"]
    return {name: value for name, value in data.items() if re.fullmatch(r"[A-Z_][A-Z0-9_]*", name)}


def container() -> dict[str, Any]:
    (only,) = manifests()["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    return only


def container_port(port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container()["ports"] if p["name"] == port]
    return number


def compose_service() -> dict[str, Any]:
    (service,) = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"].values()
    return service


def seconds(duration: str) -> float:
    """A compose duration (``120s``, ``2m``, ``1m30s``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def ports(config: dict[str, Any]) -> dict[str, int]:
    server = config["server"]
    return {"game": server["port"], "websocket": server["websocket_port"], "http": server["prometheus_port"]}


# --- the tests ---------------------------------------------------------------


class CommandLines(SynchronousTestCase):
    def test_the_image_runs_twistd_faf_replay_with_no_options(self):
        entrypoint, command = dockerfile_command()
        self.assertEqual(entrypoint, ENTRYPOINT)
        self.assertEqual(command, [])

    def test_the_image_command_line_with_fafs_configmap(self):
        """The image's command line, in the environment FAF's pod has, gives FAF's settings."""
        config_file = self.mktemp()
        Path(config_file).write_text(manifests()["ConfigMap"]["data"]["config.yaml"])
        environment = {**configmap_environment(), "RS_CONFIG_FILE": config_file, "RS_DB_PASSWORD": "secret"}
        self.patch(os, "environ", environment)
        options = Options()
        options.parseOptions(dockerfile_command()[0][4:])
        settings = options.settings
        config = production_config()
        self.assertEqual(
            (settings.port, settings.ws_port, settings.http_port),
            tuple(f"tcp:{port}" for port in ports(config).values()),
        )
        self.assertEqual(settings.vault, config["storage"]["vault_path"])
        self.assertEqual(settings.grace, config["replay"]["time_with_zero_writers_to_end_replay_s"])
        self.assertEqual(settings.db, "mysql://faf-legacy-live-replay-server@mariadb:3306/faf_lobby")

    def test_the_image_defaults_put_the_vault_on_fafs_volume(self):
        """Without RS_CONFIG_FILE the relative default vault lands in WORKDIR: FAF's mount point."""
        stage = final_stage()
        workdir = [rest for word, rest in stage if word == "WORKDIR"][-1]
        self.assertEqual(
            os.path.join(workdir, Settings().vault), production_config()["storage"]["vault_path"]
        )

    def test_the_image_sets_no_setting(self):
        """A FAF_REPLAY_* variable in the image would override the operator's YAML file."""
        environment = " ".join(rest for word, rest in dockerfile_instructions() if word == "ENV")
        self.assertNotIn("FAF_REPLAY_", environment)
        self.assertNotIn("RS_CONFIG_FILE", environment)

    def test_the_image_exposes_fafs_ports_and_volume(self):
        stage = dict(final_stage())
        self.assertEqual({int(p) for p in stage["EXPOSE"].split()}, set(ports(production_config()).values()))
        self.assertEqual(json.loads(stage["VOLUME"]), [production_config()["storage"]["vault_path"]])
        self.assertEqual(stage["STOPSIGNAL"], "SIGTERM")
        self.assertNotIn("USER", stage)  # root, like the Rust image: FAF's vault belongs to root

    def test_the_final_stage_installs_no_compiler(self):
        installed = " ".join(rest for word, rest in final_stage() if word == "RUN")
        for tool in ("gcc", "-dev", "pkg-config", "build-essential"):
            self.assertNotIn(tool, installed)
        self.assertIn("libmariadb3", installed)

    def test_the_unit_runs_twistd_faf_replay(self):
        argv = unit_command()
        self.assertTrue(argv[0].endswith("/twistd"))
        self.assertEqual(argv[1:4], ["-n", "--pidfile=", "faf-replay"])
        # with the example configuration in place of /etc/faf-replay/faf-replay.toml
        self.patch(os, "environ", {})
        options = Options()
        example = str(ROOT / "faf-replay.example.toml")
        options.parseOptions([example if arg.endswith(".toml") else arg for arg in argv[4:]])
        self.assertEqual(options.settings.ws_port, "tcp:15001")


class EntryPoint(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_help_from_the_image_entry_point(self):
        entrypoint, _ = dockerfile_command()
        cwd = self.mktemp()
        os.makedirs(cwd)
        twistd = run_twistd(self, cwd, *entrypoint[4:], "--help")  # run_twistd adds entrypoint[1:4]
        self.assertEqual((yield twistd.exited), 0)
        self.assertIn(b"--ws-port", twistd.output)


class Kubernetes(SynchronousTestCase):
    def test_the_manifests_parse(self):
        self.assertEqual(
            set(manifests()), {"StatefulSet", "Service", "ConfigMap", "IngressRoute", "IngressRouteTCP"}
        )

    def test_the_settings_are_fafs_unchanged(self):
        self.assertEqual(production_config(), yaml.safe_load(FAF_CONFIG.read_text()))

    def test_the_container_listens_where_the_settings_say(self):
        config = ports(production_config())
        self.assertEqual({p["containerPort"] for p in container()["ports"]}, set(config.values()))
        service = manifests()["Service"]["spec"]["ports"]
        self.assertEqual({p["port"] for p in service}, {config["game"], config["websocket"]})
        self.assertEqual({p["targetPort"] for p in service}, {config["game"], config["websocket"]})
        # Traefik's routes reach the game port and the WebSocket port.
        routed = {
            route_service["port"]
            for kind in ("IngressRouteTCP", "IngressRoute")
            for route in manifests()[kind]["spec"]["routes"]
            for route_service in route["services"]
        }
        self.assertEqual(routed, {config["game"], config["websocket"]})

    def test_probes_ask_the_http_port(self):
        http = ports(production_config())["http"]
        readiness = container()["readinessProbe"]["httpGet"]
        self.assertEqual((readiness["path"], container_port(readiness["port"])), ("/health", http))
        # Liveness: the event loop answers; a vault problem (503 on /health) is not fixed by a restart.
        liveness = container()["livenessProbe"]["httpGet"]
        self.assertEqual((liveness["path"], container_port(liveness["port"])), ("/metrics", http))

    def test_the_scrape_annotations_are_unchanged(self):
        annotations = manifests()["StatefulSet"]["spec"]["template"]["metadata"]["annotations"]
        self.assertEqual(
            annotations,
            {"prometheus.io/scrape": "true", "prometheus.io/port": "8011", "prometheus.io/path": "/"},
        )
        # VictoriaMetrics keeps the target only where a container port equals the annotation.
        self.assertIn(
            int(annotations["prometheus.io/port"]), [p["containerPort"] for p in container()["ports"]]
        )
        self.assertEqual(int(annotations["prometheus.io/port"]), ports(production_config())["http"])

    def test_the_volumes_are_where_the_settings_say(self):
        mounts = {mount["name"]: mount for mount in container()["volumeMounts"]}
        self.assertEqual(mounts["faf-replays-pvc"]["mountPath"], production_config()["storage"]["vault_path"])
        self.assertEqual(mounts["config"]["mountPath"], configmap_environment()["RS_CONFIG_FILE"])
        self.assertIn(mounts["config"]["subPath"], manifests()["ConfigMap"]["data"])
        self.assertEqual(configmap_environment()["RUST_LOG"], "info")

    def test_the_image_is_ours_with_no_command(self):
        self.assertEqual(container()["image"], f"faforever/faf-replay:{faf_replay.__version__}")
        self.assertNotIn("command", container())
        self.assertNotIn("args", container())
        self.assertNotIn("securityContext", manifests()["StatefulSet"]["spec"]["template"]["spec"])

    def test_the_grace_period_covers_saving_every_game(self):
        grace = manifests()["StatefulSet"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        self.assertGreaterEqual(grace, MINIMUM_GRACE)
        self.assertGreater(grace, 4 * Settings().db_timeout)


class Compose(SynchronousTestCase):
    def test_the_service_is_the_statefulsets(self):
        service = compose_service()
        self.assertEqual(service["image"], container()["image"])
        self.assertNotIn("command", service)
        self.assertNotIn("entrypoint", service)
        self.assertIn("faf", service["networks"])
        self.assertIn("faf", yaml.safe_load((DEPLOY / "compose.yaml").read_text())["networks"])

    def test_the_ports_are_fafs(self):
        config = ports(production_config())
        service = compose_service()
        published = {tuple(int(p) for p in mapping.split(":")) for mapping in service["ports"]}
        self.assertEqual(published, {(config["game"],) * 2, (config["websocket"],) * 2})
        self.assertEqual([int(p) for p in service["expose"]], [config["http"]])

    def test_the_vault_is_mounted_where_the_settings_say(self):
        mounts = {target: source for source, target in (v.split(":") for v in compose_service()["volumes"])}
        self.assertIn(production_config()["storage"]["vault_path"], mounts)
        # The env file (RS_CONFIG_FILE=/config/...) sits in the folder mounted at /config, as in faf-stack.
        self.assertEqual(os.path.dirname(compose_service()["env_file"]), mounts["/config"])

    def test_the_health_check_asks_health_on_the_http_port(self):
        test = compose_service()["healthcheck"]["test"]
        self.assertEqual(test[:2], ["CMD", "python"])
        self.assertIn(f"http://127.0.0.1:{ports(production_config())['http']}/health", test[-1])

    def test_the_grace_period_is_the_statefulsets(self):
        grace = manifests()["StatefulSet"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        self.assertEqual(seconds(compose_service()["stop_grace_period"]), grace)


# --- the dashboard -----------------------------------------------------------

#: PromQL words that are not metric names.
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless"}


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def _families() -> dict[str, tuple[set[str], set[str]]]:
    """Every metric family the server's registry exports: its sample names and
    labels, also for a labelled metric with no child yet (no sample)."""
    families: dict[str, tuple[set[str], set[str]]] = {}
    for family in REGISTRY.collect():
        collector = REGISTRY._names_to_collectors.get(family.name)
        labels = set(getattr(collector, "_labelnames", ()))
        names = {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
        for sample in family.samples:
            names.add(sample.name)
            labels.update(sample.labels)
        families[family.name] = (names, labels)
    return families


def exported_families() -> dict[str, set[str]]:
    return {family: names for family, (names, _) in _families().items()}


def exported_names() -> dict[str, set[str]]:
    """Every sample name the server exports, with the labels it may carry."""
    exported: dict[str, set[str]] = {}
    for names, labels in _families().values():
        for name in names:
            exported.setdefault(name, set()).update(labels | ({"le"} if name.endswith("_bucket") else set()))
    return exported


def dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana-dashboard.json").read_text())


def targets() -> list[dict[str, Any]]:
    return [target for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names of a PromQL expression: identifiers followed by a selector."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{", without_strings))
    return names - _PROMQL_WORDS


class Dashboard(SynchronousTestCase):
    def test_every_expression_names_exported_metrics(self):
        exported = exported_names()
        for target in targets():
            names = metric_names(target["expr"])
            self.assertTrue(names, target["expr"])
            for name in names:
                self.assertIn(name, exported, target["expr"])

    def test_every_grouping_label_exists(self):
        exported = exported_names()
        for target in targets():
            labels = set().union(*(exported[name] for name in metric_names(target["expr"])))
            labels.add("instance")  # added by the scraper
            for group in re.findall(r"\bby \(([^)]*)\)", target["expr"]):
                for label in (label.strip() for label in group.split(",")):
                    self.assertIn(label, labels, target["expr"])

    def test_every_metric_of_the_server_is_on_the_dashboard(self):
        used = set().union(*(metric_names(target["expr"]) for target in targets()))
        for family, names in exported_families().items():
            if family.startswith("replayserver_"):
                self.assertTrue(names & used, f"{family} has no panel")

    def test_the_instance_variable_asks_an_exported_metric(self):
        variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
        query = variables["instance"]["query"]["query"]
        metric = re.fullmatch(r"label_values\((\w+), instance\)", query).group(1)
        self.assertIn(metric, exported_names())

    def test_the_datasource_is_a_variable(self):
        variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
        self.assertEqual(variables["DS_PROMETHEUS"]["type"], "datasource")
        self.assertEqual(variables["DS_PROMETHEUS"]["query"], "prometheus")
        for panel in dashboard()["panels"]:
            if panel["type"] != "row":
                self.assertEqual(panel["datasource"]["uid"], "${DS_PROMETHEUS}", panel["title"])
                self.assertTrue(panel["targets"], panel["title"])
