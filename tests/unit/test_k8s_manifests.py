"""The Kubernetes manifests in ops/k8s render, are valid, and mean what they say.

No cluster, no kubectl, no kustomize binary (CI has only what `.ci/run` installs):

1. :func:`tests.unit.k8s_render.render` builds a kustomization the way `kubectl apply
   -k` would, for the part of Kustomize that ops/k8s uses, and refuses anything else.
   Where a kustomize or kubectl binary happens to be installed, a test checks that both
   give the same objects.
2. Built-in kinds are validated against Kubernetes' OpenAPI schemas
   (kubernetes-validate, strict: an unknown field is an error, as with
   `kubectl apply --validate=strict`).
3. KEDA's and the Prometheus Operator's objects are validated against the schemas of
   their real CRDs (k8s_schemas/README.md says where from), made strict the same way.
4. The rest checks what a reviewer would: the grace period covers the shutdown timeout,
   the probes hit the endpoints the service serves, KEDA never scales past the
   partitions, secrets are files, every TIERSTREAM_* name is a setting.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import subprocess
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import fields
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from consumer.service.metrics import HealthServer, Metrics
from consumer.service.settings import Settings
from tests.integration.support import REPO
from tests.unit.k8s_render import KustomizeError, Obj, render, split_image

K8S = REPO / "ops" / "k8s"
BASE = K8S / "base"
EXAMPLE = K8S / "overlays" / "example"
SCHEMAS = Path(__file__).with_name("k8s_schemas")

#: Validated against an older release than current clusters run, so that nothing too
#: new slips in. The newest fields used: a PDB's unhealthyPodEvictionPolicy (on by
#: default from 1.27), a NetworkPolicy port's endPort (1.25).
KUBERNETES_VERSION = "1.29"
#: terminationGracePeriodSeconds beyond TIERSTREAM_SHUTDOWN_TIMEOUT_S: closing the Kafka
#: clients and Redis after the batch in flight has committed.
SHUTDOWN_MARGIN_S = 15
SECRETS_DIR = "/var/run/secrets/tierstream"

#: Settings coming with issue 9 part 1 (Kafka security, static membership), and with
#: them the TIERSTREAM_X_FILE convention. Drop this list once consumer/service/
#: settings.py has them.
SECURITY_PROTOCOLS = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
#: The service's SASL mechanism -> KEDA's Kafka scaler's `sasl` value.
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
REDIS_SCHEMES = {"redis", "rediss", "redis+cluster", "redis+sentinel"}


# --- Validation -----------------------------------------------------------------------

#: The CRD objects and the schema of each (k8s_schemas/README.md).
CRD_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_v1alpha1_scaledobject.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh_v1alpha1_triggerauthentication.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.json",
}


def _strict(schema: Any) -> Any:
    """``schema`` with unknown fields refused wherever it lists the known ones.

    The API server prunes (or, with strict field validation, refuses) fields a CRD's
    schema does not declare; JSON Schema would let them through, so a misspelled field
    would pass unseen.

    >>> _strict({"type": "object", "properties": {"a": {"type": "string"}}})["additionalProperties"]
    False
    """
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if k != "properties"}
    if "properties" in schema:
        out["properties"] = {name: _strict(s) for name, s in schema["properties"].items()}
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        out.setdefault("additionalProperties", preserve)
    return out


@cache
def _crd_validator(api_version: str, kind: str) -> jsonschema.Draft4Validator:
    # openAPIV3Schema is OpenAPI 3.0's schema object, JSON Schema draft 4 in all we use.
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[api_version, kind]).read_text())
    return jsonschema.Draft4Validator(_strict(schema))


def validate(obj: Obj) -> None:
    """Raise if ``obj`` does not fit its kind's schema (jsonschema.ValidationError)."""
    if (obj["apiVersion"], obj["kind"]) in CRD_SCHEMAS:
        _crd_validator(obj["apiVersion"], obj["kind"]).validate(obj)
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


# --- Reading a rendering --------------------------------------------------------------


class Manifests:
    """A rendering, with the lookups the checks need."""

    def __init__(self, objects: list[Obj]) -> None:
        self.objects = objects

    def all(self, kind: str) -> list[Obj]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> Obj:
        (obj,) = self.all(kind)
        return obj

    @property
    def pod(self) -> Obj:
        spec: Obj = self.one("StatefulSet")["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> Obj:
        (container,) = self.pod["containers"]
        assert isinstance(container, dict)
        return container

    @property
    def config(self) -> dict[str, str]:
        """The settings the pods get: the ConfigMap they name, then their own env."""
        names = {e["configMapRef"]["name"] for e in self.container.get("envFrom", [])}
        data: dict[str, str] = {}
        for cm in self.all("ConfigMap"):
            if cm["metadata"]["name"] in names:
                data.update(cm["data"])
        data.update({e["name"]: e.get("value", "") for e in self.container.get("env", [])})
        return data

    def setting(self, name: str) -> str:
        """A setting in force: the pods' value, else the Settings default."""
        default = getattr(Settings(), name)
        return self.config.get(f"TIERSTREAM_{name.upper()}", str(default))

    @property
    def trigger(self) -> Obj:
        (trigger,) = self.one("ScaledObject")["spec"]["triggers"]
        assert isinstance(trigger, dict)
        return trigger


def example_file(path: Path) -> Path:
    """The committed placeholder of a secret file the user creates (never the real one)."""
    placeholder = path.with_name(path.name + ".example")
    assert placeholder.is_file(), f"{placeholder} is missing: commit a placeholder"
    return placeholder


RENDERINGS = {"base": BASE, "example": EXAMPLE}


@pytest.fixture(scope="module", params=sorted(RENDERINGS))
def manifests(request: pytest.FixtureRequest) -> Manifests:
    return Manifests(render(RENDERINGS[request.param], secret_file=example_file))


@pytest.fixture(scope="module")
def example() -> Manifests:
    return Manifests(render(EXAMPLE, secret_file=example_file))


# --- 1. Rendering ---------------------------------------------------------------------


def test_the_example_has_every_object(example: Manifests) -> None:
    kinds = sorted(o["kind"] for o in example.objects)
    assert kinds == [
        "ConfigMap",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "ScaledObject",
        "Secret",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
        "StatefulSet",
        "TriggerAuthentication",
    ]
    assert {o["metadata"]["namespace"] for o in example.objects} == {"tierstream"}


def test_generated_names_are_hashed_and_every_reference_follows(example: Manifests) -> None:
    secret = example.one("Secret")["metadata"]["name"]
    config = example.one("ConfigMap")["metadata"]["name"]
    assert re.fullmatch(r"tierstream-secrets-[a-z0-9]{10}", secret)
    assert re.fullmatch(r"tierstream-config-[a-z0-9]{10}", config)
    assert [v["secret"]["secretName"] for v in example.pod["volumes"] if "secret" in v] == [secret]
    assert [e["configMapRef"]["name"] for e in example.container["envFrom"]] == [config]
    refs = example.one("TriggerAuthentication")["spec"]["secretTargetRef"]
    assert {r["name"] for r in refs} == {secret}


def test_the_renderer_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\ncommonLabels: {a: b}\n")
    with pytest.raises(KustomizeError, match="commonLabels"):
        render(tmp_path)


def test_a_patch_that_misses_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{BASE}]\npatches:\n"
        "  - target: {kind: ScaledObject, name: tierstream}\n"
        "    patch: '[{op: replace, path: /spec/maxReplicaCounts, value: 3}]'\n"
    )
    with pytest.raises(KustomizeError, match="maxReplicaCounts"):
        render(tmp_path)


def _kustomize_command() -> list[str] | None:
    if path := shutil.which("kustomize"):
        return [path, "build"]
    if path := shutil.which("kubectl"):
        return [path, "kustomize"]
    return None


@pytest.mark.skipif(_kustomize_command() is None, reason="no kustomize or kubectl installed")
def test_the_renderer_agrees_with_kustomize_where_one_is_installed(tmp_path: Path) -> None:
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    for placeholder in tree.rglob("*.example"):
        shutil.copy(placeholder, placeholder.with_suffix(""))
    for name, path in RENDERINGS.items():
        folder = tree / path.relative_to(K8S)
        command = [*(_kustomize_command() or []), str(folder)]
        out = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
        theirs = [o for o in yaml.safe_load_all(out.stdout) if o]
        ours = render(folder)

        def by_id(objs: list[Obj]) -> dict[tuple[str, str], Obj]:
            return {(o["kind"], o["metadata"]["name"]): o for o in objs}

        assert by_id(ours) == by_id(theirs), name


# --- 2, 3. Schemas --------------------------------------------------------------------


def test_every_object_fits_its_schema(manifests: Manifests) -> None:
    for obj in manifests.objects:
        validate(obj)


def _statefulset() -> Obj:
    obj: Obj = Manifests(render(BASE)).one("StatefulSet")
    return obj


def _scaledobject() -> Obj:
    obj: Obj = Manifests(render(BASE)).one("ScaledObject")
    return obj


@pytest.mark.parametrize(
    ("obj", "path", "value"),
    [
        # A misspelled field: Kubernetes would refuse it (kubectl --validate=strict).
        (_statefulset, "spec/template/spec/terminationGracePeriodSecond", 45),
        # A wrong type.
        (_statefulset, "spec/template/spec/containers/0/ports/0/containerPort", "9108"),
        # A required field missing (a container's name).
        (_statefulset, "spec/template/spec/containers/0", {"image": "tierstream:0.1.0"}),
        (_scaledobject, "spec/maxReplicaCounts", 12),
        (_scaledobject, "spec/minReplicaCount", "1"),
        (_scaledobject, "spec/triggers/0/metadata/lagThreshold", 10000),
    ],
    ids=["misspelled", "wrong type", "required", "crd misspelled", "crd wrong type", "crd map"],
)
def test_the_validation_refuses_a_broken_object(
    obj: Callable[[], Obj], path: str, value: object
) -> None:
    broken = obj()
    *parents, last = path.split("/")
    node: Any = broken
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    node[int(last) if last.isdigit() else last] = value
    with pytest.raises(jsonschema.ValidationError):
        validate(broken)


# --- 4. What the manifests mean -------------------------------------------------------


def check_grace_period(m: Manifests) -> None:
    timeout = float(m.setting("shutdown_timeout_s"))
    grace = m.pod["terminationGracePeriodSeconds"]
    assert grace >= timeout + SHUTDOWN_MARGIN_S, (
        f"terminationGracePeriodSeconds {grace} < TIERSTREAM_SHUTDOWN_TIMEOUT_S {timeout} "
        f"+ {SHUTDOWN_MARGIN_S}: SIGKILL would cut the batch in flight"
    )


def test_sigkill_waits_for_the_shutdown_timeout_and_a_margin(manifests: Manifests) -> None:
    check_grace_period(manifests)
    assert Settings().shutdown_timeout_s == 30.0  # the value the comment in the YAML names


def test_the_probes_ask_the_endpoints_the_service_serves(manifests: Manifests) -> None:
    port = int(manifests.setting("metrics_port"))
    (named,) = [p for p in manifests.container["ports"] if p["name"] == "metrics"]
    assert named["containerPort"] == port
    probes = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in probes.items():
        get = manifests.container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ("metrics", port), probe
    annotations = manifests.one("StatefulSet")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_the_service_answers_those_paths() -> None:
    ready = False
    server = HealthServer(Metrics(), host="127.0.0.1", port=0, is_ready=lambda: ready)
    server.start()
    try:

        def status(path: str) -> int:
            try:
                url = f"http://127.0.0.1:{server.port}{path}"
                with urllib.request.urlopen(url, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                with exc:
                    return exc.code

        assert (status("/healthz"), status("/readyz"), status("/metrics")) == (200, 503, 200)
        ready = True
        assert status("/readyz") == 200
    finally:
        server.stop()


def check_scaling_stops_at_the_partitions(m: Manifests) -> None:
    scaled = m.one("ScaledObject")
    partitions = int(scaled["metadata"]["annotations"]["tierstream/input-topic-partitions"])
    assert scaled["spec"]["maxReplicaCount"] == partitions, "pods beyond the partitions idle"
    assert 1 == scaled["spec"]["minReplicaCount"] <= partitions


def test_keda_scales_the_statefulset_on_the_groups_lag(manifests: Manifests) -> None:
    check_scaling_stops_at_the_partitions(manifests)
    scaled = manifests.one("ScaledObject")
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", "tierstream")
    trigger = manifests.trigger
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == manifests.setting("group_id")
    assert meta["topic"] == manifests.setting("input_topic")
    assert meta["bootstrapServers"] == manifests.setting("kafka_bootstrap")
    assert meta["allowIdleConsumers"] == "false"
    assert int(meta["lagThreshold"]) > 0


def test_the_example_scales_to_its_12_partitions_and_keda_logs_in_as_the_service(
    example: Manifests,
) -> None:
    assert example.one("ScaledObject")["spec"]["maxReplicaCount"] == 12
    config = example.config
    assert config["TIERSTREAM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["TIERSTREAM_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    meta = example.trigger["metadata"]
    assert meta["sasl"] == KEDA_SASL[config["TIERSTREAM_KAFKA_SASL_MECHANISM"]]
    assert meta["tls"] == "enable"
    auth = example.one("TriggerAuthentication")
    assert example.trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    secret = example.one("Secret")
    given = {r["parameter"]: r["key"] for r in auth["spec"]["secretTargetRef"]}
    assert given == {
        "username": "kafka-sasl-username",
        "password": "kafka-sasl-password",
        "ca": "kafka-ca.crt",
    }
    assert set(given.values()) <= set(secret["data"])
    for name in ("username", "password"):  # the service's files hold the same keys
        key = config[f"TIERSTREAM_KAFKA_SASL_{name.upper()}_FILE"].removeprefix(SECRETS_DIR + "/")
        assert key == given[name]


def check_secrets_are_files(m: Manifests) -> None:
    for container in m.pod["containers"] + m.pod.get("initContainers", []):
        assert not any("secretRef" in e for e in container.get("envFrom", [])), container["name"]
        for e in container.get("env", []):
            assert "secretKeyRef" not in e.get("valueFrom", {}), e["name"]
    (mount,) = [v for v in m.container["volumeMounts"] if v["mountPath"] == SECRETS_DIR]
    assert mount["readOnly"] is True
    (volume,) = [v for v in m.pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"].startswith("tierstream-secrets")


def test_secrets_are_mounted_files_never_environment_variables(manifests: Manifests) -> None:
    check_secrets_are_files(manifests)


def test_every_secret_file_a_setting_names_is_in_the_secret(example: Manifests) -> None:
    (secret,) = example.all("Secret")
    paths = {
        k: v for k, v in example.config.items() if k.endswith("_FILE") and v.startswith("/var/")
    }
    assert "TIERSTREAM_REDIS_URL_FILE" in paths
    for name, path in paths.items():
        assert path.startswith(SECRETS_DIR + "/"), name
        assert path.removeprefix(SECRETS_DIR + "/") in secret["data"], name
    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    scheme = values["redis-url"].partition("://")[0]
    assert scheme in REDIS_SCHEMES and scheme == "redis+cluster"
    for key, value in values.items():
        # KEDA reads a password byte for byte: a trailing newline would be part of it.
        assert key.endswith(".crt") or not value.endswith("\n"), key


def check_setting_names(m: Manifests) -> None:
    known = {f.name for f in fields(Settings)}
    for name in m.config:
        setting = name.removeprefix("TIERSTREAM_").lower()
        assert name.startswith("TIERSTREAM_"), name
        assert {setting, setting.removesuffix("_file")} & known, f"{name} is no setting"


def test_every_tierstream_variable_is_a_setting(manifests: Manifests) -> None:
    check_setting_names(manifests)
    config = manifests.config
    assert config.get("TIERSTREAM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") in SECURITY_PROTOCOLS
    assert config.get("TIERSTREAM_KAFKA_SASL_MECHANISM", "PLAIN") in KEDA_SASL
    # The settings parse and pass the service's checks, the Secret's files being the
    # overlay's placeholders.
    mounted = "/var/run/secrets/tierstream/"
    examples = {
        p.name.removesuffix(".example"): str(p)
        for p in REPO.joinpath("ops/k8s/overlays/example/secrets").glob("*.example")
    }
    # The Redis URL's form is checked on its own (REDIS_SCHEMES).
    Settings.from_env(
        {
            k: examples[v.removeprefix(mounted)] if v.startswith(mounted) else v
            for k, v in config.items()
            if k != "TIERSTREAM_REDIS_URL_FILE"
        }
    )


def test_each_pod_is_a_static_member_named_after_itself(manifests: Manifests) -> None:
    statefulset = manifests.one("StatefulSet")["spec"]
    assert statefulset["podManagementPolicy"] == "Parallel"
    assert "replicas" not in statefulset, "the HPA owns the count"
    (instance,) = [e for e in manifests.container["env"] if e["name"] == "TIERSTREAM_INSTANCE_ID"]
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert manifests.config["TIERSTREAM_STATIC_MEMBERSHIP"] in ("1", "true", "yes", "on")
    assert manifests.container["command"] == ["tierstream", "run"]


def test_the_image_is_this_version_of_the_repos_dockerfile(manifests: Manifests) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    name, tag = split_image(manifests.container["image"])
    assert name.rpartition("/")[2] == "tierstream"
    assert tag == f":{version}"
    # The pod runs as the image's user.
    user = re.search(r"^USER (\d+):(\d+)$", (REPO / "Dockerfile").read_text(), re.M)
    assert user, "the Dockerfile has no USER uid:gid line"
    pod = manifests.pod["securityContext"]
    assert (pod["runAsUser"], pod["runAsGroup"]) == (int(user[1]), int(user[2]))


def test_the_container_is_locked_down(manifests: Manifests) -> None:
    assert manifests.pod["securityContext"]["runAsNonRoot"] is True
    context = manifests.container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    resources = manifests.container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    account = manifests.one("ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert manifests.pod["serviceAccountName"] == account["metadata"]["name"]
    assert manifests.pod["automountServiceAccountToken"] is False


def test_service_monitor_and_budget_find_the_pods(manifests: Manifests) -> None:
    pod_labels = manifests.one("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    service = manifests.one("Service")
    assert service["spec"]["clusterIP"] == "None"
    assert manifests.one("StatefulSet")["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["metrics"]
    monitor = manifests.one("ServiceMonitor")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    ports = [p["name"] for p in service["spec"]["ports"]]
    assert [e["port"] for e in monitor["endpoints"]] == ports
    # up{job="tierstream"} in ops/prometheus/rules: the job is the Service's name.
    assert service["metadata"]["name"] == "tierstream" and "jobLabel" not in monitor
    budget = manifests.one("PodDisruptionBudget")["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()


def _ports(rules: list[Obj]) -> set[tuple[str, int | str, int | None]]:
    out = set()
    for rule in rules:
        assert rule.get("ports"), f"a rule without ports allows every port: {rule}"
        out |= {(p.get("protocol", "TCP"), p["port"], p.get("endPort")) for p in rule["ports"]}
    return out


def test_the_network_policy_lets_through_only_metrics_kafka_redis_and_dns(
    manifests: Manifests,
) -> None:
    policy = manifests.one("NetworkPolicy")["spec"]
    pod_labels = manifests.one("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    assert _ports(policy["ingress"]) == {("TCP", "metrics", None)}
    assert _ports(policy["egress"]) == {
        ("TCP", 9092, None),
        ("TCP", 9093, None),
        ("TCP", 9094, None),
        ("TCP", 6379, 6384),
        ("TCP", 26379, None),
        ("UDP", 53, None),
        ("TCP", 53, None),
    }


def test_metrics_come_from_the_monitoring_namespace_in_the_base_and_any_in_the_example(
    example: Manifests,
) -> None:
    (base_rule,) = Manifests(render(BASE)).one("NetworkPolicy")["spec"]["ingress"]
    assert base_rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]
    (example_rule,) = example.one("NetworkPolicy")["spec"]["ingress"]
    assert "from" not in example_rule


@pytest.mark.parametrize(
    ("check", "break_it"),
    [
        (check_grace_period, lambda m: m.pod.update(terminationGracePeriodSeconds=30)),
        (
            check_scaling_stops_at_the_partitions,
            lambda m: m.one("ScaledObject")["spec"].update(maxReplicaCount=13),
        ),
        (
            check_secrets_are_files,
            lambda m: m.container["env"].append(
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
            ),
        ),
        (check_setting_names, lambda m: m.container["env"].append({"name": "TIERSTREAM_NOPE"})),
    ],
    ids=["grace", "replicas", "secret env", "setting name"],
)
def test_the_checks_catch_a_broken_rendering(
    example: Manifests, check: Callable[[Manifests], None], break_it: Callable[[Manifests], None]
) -> None:
    broken = Manifests(copy.deepcopy(example.objects))
    break_it(broken)
    with pytest.raises(AssertionError):
        check(broken)
