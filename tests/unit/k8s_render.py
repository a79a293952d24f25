"""A small Kustomize: the objects `kubectl apply -k DIR` would send, built in Python.

tests/unit/test_k8s_manifests.py checks ops/k8s without a cluster and without a
kustomize or kubectl binary (CI has neither), and no PyPI package builds
kustomizations. This builds the part of Kustomize that ops/k8s uses, as kustomize 5
does it (down to the hash in a generated object's name), and refuses anything else with
a :class:`KustomizeError`, so a kustomization that uses more fails the test until this
learns it. Where kustomize or kubectl is installed, the test checks that both agree.

YAML is read by PyYAML, as YAML 1.1, where kustomize reads YAML 1.2: an unquoted
``yes`` or ``on`` is a boolean here and a string there. The manifests quote such
strings (Kubernetes wants strings there anyway), and the schemas refuse a boolean.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]


class KustomizeError(Exception):
    """A kustomization this renderer cannot build, or that kustomize would refuse."""


#: Where a workload's pod template names a ConfigMap or a Secret: the references that
#: kustomize rewrites when it renames a generated object (a path goes through lists).
_POD = "spec/template/spec"
_WORKLOADS = ("StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job")
_CONTAINERS = ("containers", "initContainers")
_BUILTIN_REFERENCES: dict[str, list[tuple[str, str]]] = {
    "ConfigMap": [
        (w, f"{_POD}/{path}")
        for w in _WORKLOADS
        for path in (
            *(f"{c}/env/valueFrom/configMapKeyRef/name" for c in _CONTAINERS),
            *(f"{c}/envFrom/configMapRef/name" for c in _CONTAINERS),
            "volumes/configMap/name",
            "volumes/projected/sources/configMap/name",
        )
    ],
    "Secret": [
        (w, f"{_POD}/{path}")
        for w in _WORKLOADS
        for path in (
            *(f"{c}/env/valueFrom/secretKeyRef/name" for c in _CONTAINERS),
            *(f"{c}/envFrom/secretRef/name" for c in _CONTAINERS),
            "volumes/secret/secretName",
            "volumes/projected/sources/secret/name",
            "imagePullSecrets/name",
        )
    ],
}
_KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "configMapGenerator",
    "secretGenerator",
    "configurations",
    "patches",
    "namespace",
    "images",
}


def render(root: Path, *, secret_file: Callable[[Path], Path] = lambda p: p) -> list[Obj]:
    """The objects `kubectl apply -k root` would send, for what ops/k8s uses:

    - ``resources``: YAML files and other kustomization folders (bases);
    - ``configMapGenerator`` / ``secretGenerator`` from ``envs``, ``files`` and
      ``literals``, behaviour ``create`` or ``merge``; the generated names get
      kustomize's content hash, and references to them follow (the built-in ones of a
      pod template, and ``configurations`` ``nameReference`` entries);
    - ``patches``: JSON patches (RFC 6902: add, replace, remove) with a ``target``;
    - ``namespace`` and ``images``.

    Anything else is refused, and so is a patch or a merge that finds nothing to change
    (kustomize would pass some of these silently). ``secret_file`` maps the path of each
    secretGenerator file to the file actually read: the tests read the ``.example``
    placeholders. Objects are matched by kind and name only (one namespace).
    """
    build = _build(root, secret_file)
    renames: dict[tuple[str, str], str] = {}
    for obj in build.objects:
        kind, name = obj["kind"], obj["metadata"]["name"]
        if (kind, name) in build.generated:
            renames[kind, name] = obj["metadata"]["name"] = f"{name}-{_content_hash(obj)}"
    for (kind, old), new in renames.items():
        for referrer, path in build.references.get(kind, []):
            for obj in (o for o in build.objects if o["kind"] == referrer):
                for parent, key in _fields(obj, path.split("/")):
                    if parent[key] == old:
                        parent[key] = new
    return build.objects


@dataclass
class _Build:
    """What a kustomization builds: its objects, which of them were generated (their
    names get a hash at the end), and where each kind's name is referred to."""

    objects: list[Obj] = field(default_factory=list)
    generated: set[tuple[str, str]] = field(default_factory=set)
    references: dict[str, list[tuple[str, str]]] = field(
        default_factory=lambda: copy.deepcopy(_BUILTIN_REFERENCES)
    )

    def add(self, base: _Build) -> None:
        """A base's objects, and its configurations, which hold in the overlay too."""
        self.objects += base.objects
        self.generated |= base.generated
        for kind, specs in base.references.items():
            mine = self.references.setdefault(kind, [])
            mine += [s for s in specs if s not in mine]

    def find(self, kind: str, name: str) -> Obj:
        (obj,) = (o for o in self.objects if (o["kind"], o["metadata"]["name"]) == (kind, name))
        return obj


def _build(root: Path, secret_file: Callable[[Path], Path]) -> _Build:
    """One kustomization, in kustomize's order: resources, generators, transformers."""
    k = yaml.safe_load((root / "kustomization.yaml").read_text())
    if unknown := set(k) - _KUSTOMIZATION_FIELDS:
        raise KustomizeError(f"{root}: the renderer does not know {sorted(unknown)}")
    build = _Build()
    for entry in k.get("resources", []):
        path = root / entry
        if path.is_dir():
            build.add(_build(path, secret_file))
        else:
            build.objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for spec in k.get(key, []):
            _generate(kind, spec, _generator_data(kind, spec, root, secret_file), build)
    for entry in k.get("configurations", []):
        config = yaml.safe_load((root / entry).read_text())
        if set(config) != {"nameReference"}:
            raise KustomizeError(f"{root / entry}: only nameReference is known")
        for ref in config["nameReference"]:
            specs = build.references.setdefault(ref["kind"], [])
            specs += [(s["kind"], s["path"]) for s in ref["fieldSpecs"]]
    ids = [(o["kind"], o["metadata"]["name"]) for o in build.objects]
    if len(ids) != len(set(ids)):
        raise KustomizeError(f"{root}: an object appears twice: {sorted(ids)}")
    for patch in k.get("patches", []):
        _patch(root, patch, build.objects)
    for obj in build.objects if "namespace" in k else []:
        obj["metadata"]["namespace"] = k["namespace"]
    for image in k.get("images", []):
        _set_image(image, build.objects)
    return build


def _generator_data(
    kind: str, spec: Obj, root: Path, secret_file: Callable[[Path], Path]
) -> dict[str, str]:
    """The data of a configMapGenerator or secretGenerator entry (kustomize's api/kv)."""
    if unknown := set(spec) - {"name", "behavior", "envs", "files", "literals", "type"}:
        raise KustomizeError(f"{kind} generator {spec.get('name')}: unknown {sorted(unknown)}")
    pairs: list[tuple[str, str]] = []
    for env in spec.get("envs", []):
        for line in (root / env).read_text().splitlines():
            line = line.lstrip()
            if line and not line.startswith("#"):
                key, sep, value = line.partition("=")
                if not sep:  # kustomize would take an empty value; refuse the typo
                    raise KustomizeError(f"{root / env}: {line!r} is not KEY=VALUE")
                pairs.append((key, value))
    for literal in spec.get("literals", []):
        key, sep, value = literal.partition("=")
        if not sep or not key:
            raise KustomizeError(f"{kind} {spec['name']}: {literal!r} is not KEY=VALUE")
        quoted = len(value) > 1 and value[0] == value[-1] and value[0] in "'\""
        pairs.append((key, value[1:-1] if quoted else value))
    for entry in spec.get("files", []):
        key, sep, name = entry.partition("=")
        path = root / (name if sep else key)
        read = secret_file(path) if kind == "Secret" else path
        pairs.append((key if sep else path.name, read.read_text()))
    data = dict(pairs)
    if len(data) != len(pairs):
        raise KustomizeError(f"{kind} {spec['name']}: a key is given twice")
    return {k: _base64(v) for k, v in data.items()} if kind == "Secret" else data


def _generate(kind: str, spec: Obj, data: dict[str, str], build: _Build) -> None:
    """A generated ConfigMap or Secret, or more data merged into one a base generated."""
    name = spec["name"]
    behavior = spec.get("behavior", "create")
    if behavior == "create":
        obj: Obj = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}, "data": data}
        if kind == "Secret":
            obj["type"] = spec.get("type", "Opaque")
        build.objects.append(obj)
        build.generated.add((kind, name))
    elif behavior == "merge" and (kind, name) in build.generated:
        obj = build.find(kind, name)
        obj["data"] = {**obj.get("data", {}), **data}
    else:
        raise KustomizeError(f"{kind} {name}: cannot {behavior} (nothing generated?)")


def _base64(value: str) -> str:
    """Base64 as kustomize writes a Secret's value (kyaml/yaml/datamap.go): from 70
    characters on, in lines of 70, each ending in a newline (base64 decoders skip them).

    >>> _base64("pw")
    'cHc='
    >>> [len(line) for line in _base64("x" * 60).split("\\n")]
    [70, 10, 0]
    """
    text = base64.b64encode(value.encode()).decode()
    if len(text) < 70:
        return text
    return "".join(text[i : i + 70] + "\n" for i in range(0, len(text), 70))


def _content_hash(obj: Obj) -> str:
    """Kustomize's name suffix for a generated object (api/hasher, kustomize 5).

    The name is hashed as empty: kustomize looks ``metadata/name`` up as one field name,
    which finds nothing, so the hash covers the kind, type and data only.

    >>> _content_hash({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"A": "1"}})
    '89g4tffbfk'
    """
    encoded: Obj = {"kind": obj["kind"], "name": "", "data": obj.get("data", {})}
    if obj["kind"] == "Secret":
        encoded["type"] = obj.get("type", "")
    # As Go's json.Marshal: sorted keys, no spaces, HTML characters escaped.
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    digest = hashlib.sha256(text.encode()).hexdigest()
    return digest[:10].translate(str.maketrans("013ae", "ghkmt"))


def _fields(node: Any, parts: list[str]) -> Iterator[tuple[Obj, str]]:
    """(parent, key) of each value at ``parts``, through lists as kustomize paths go.

    >>> doc = {"a": [{"b": 1}, {"c": 2}, {"b": 3}]}
    >>> [parent[key] for parent, key in _fields(doc, ["a", "b"])]
    [1, 3]
    """
    if isinstance(node, list):
        for item in node:
            yield from _fields(item, parts)
    elif isinstance(node, dict) and parts[0] in node:
        if len(parts) == 1:
            yield node, parts[0]
        else:
            yield from _fields(node[parts[0]], parts[1:])


def _patch(root: Path, patch: Obj, objects: list[Obj]) -> None:
    """A JSON patch (RFC 6902) applied to the objects its ``target`` selects."""
    target = patch.get("target", {})
    if set(patch) - {"path", "patch", "target"} or set(target) - {"group", "kind", "name"}:
        raise KustomizeError(f"{root}: patch {patch}: only path/patch and a target are known")
    ops = yaml.safe_load(patch["patch"] if "patch" in patch else (root / patch["path"]).read_text())
    if not isinstance(ops, list):
        raise KustomizeError(f"{root}: {patch}: only JSON patches (a list of ops) are known")
    chosen = [
        o
        for o in objects
        if {
            "group": o["apiVersion"].rpartition("/")[0],
            "kind": o["kind"],
            "name": o["metadata"]["name"],
        }.items()
        >= target.items()
    ]
    if not chosen:
        raise KustomizeError(f"{root}: patch target {target} selects nothing")
    for obj in chosen:
        for op in ops:
            _apply(obj, op)


def _apply(obj: Obj, op: Obj) -> None:
    """One RFC 6902 operation; a missing path is an error, not a no-op."""
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    try:
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if op["op"] == "add" and isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), copy.deepcopy(op["value"]))
        elif op["op"] == "add":
            node[last] = copy.deepcopy(op["value"])
        elif op["op"] in ("replace", "remove"):
            index = int(last) if isinstance(node, list) else last
            node[index]  # KeyError or IndexError if it is not there
            if op["op"] == "remove":
                del node[index]
            else:
                node[index] = copy.deepcopy(op["value"])
        else:
            raise KustomizeError(f"patch op {op['op']!r} is not known")
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise KustomizeError(f"patch {op} does not apply to {obj['kind']}: {exc!r}") from None


def _set_image(image: Obj, objects: list[Obj]) -> None:
    """An ``images`` entry: a new name, tag or digest for the containers using ``name``."""
    if set(image) - {"name", "newName", "newTag", "digest"}:
        raise KustomizeError(f"images entry {image}: unknown fields")
    found = False
    for obj in (o for o in objects if o["kind"] in _WORKLOADS):
        for c in _CONTAINERS:
            for parent, key in _fields(obj, [*_POD.split("/"), c, "image"]):
                name, tag = split_image(parent[key])
                if name == image["name"]:
                    found = True
                    new = image.get("newName", name)
                    if "digest" in image:
                        parent[key] = f"{new}@{image['digest']}"
                    else:
                        parent[key] = new + (f":{image['newTag']}" if "newTag" in image else tag)
    if not found:
        raise KustomizeError(f"images entry {image}: no container uses {image['name']}")


def split_image(image: str) -> tuple[str, str]:
    """Name and tag-or-digest suffix of an image reference.

    >>> split_image("tierstream:0.1.0"), split_image("host:5000/ts"), split_image("ts@sha256:ab")
    (('tierstream', ':0.1.0'), ('host:5000/ts', ''), ('ts', '@sha256:ab'))
    """
    if "@" in image:
        name, _, digest = image.partition("@")
        return name, "@" + digest
    head, slash, last = image.rpartition("/")
    name, colon, tag = last.partition(":")
    return head + slash + name, colon + tag
