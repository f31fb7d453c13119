#!/usr/bin/env python3
"""Real Helm (the Go library of Helm 4, through the helm-sdkpy bindings) for the tests.

    helm.py lint CHART [--set-json VALUES]
    helm.py install CHART --kubeconfig FILE --namespace NS --release NAME [--values-json JSON] [--json]
    helm.py uninstall --kubeconfig FILE --namespace NS --release NAME

`install` renders the chart with the values, validates them against the chart's values.schema.json,
creates every object in the cluster the kubeconfig points at, and prints the rendered manifest (with
--json: a JSON array of the rendered objects). `lint` lints the chart with VALUES merged over its
values.yaml, as `helm lint --set-json` does, and prints a JSON report.

Helm keeps its release records where HELM_DRIVER says, read once when the library loads: this script
re-executes itself with HELM_DRIVER=memory (default; nothing is written besides the chart's objects)
or the driver given with --driver. A memory release lives only as long as this process, so
`uninstall` needs releases installed with --driver secret or configmap (records kept in the
namespace). Those records are written as protobuf, which the project's API test server (JSON only)
refuses: against it, install with the memory driver and drop the server instead of uninstalling.

Exit status: 0 success, 1 Helm refused (the message is on stderr), 2 usage or environment error.
"""

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def ensure_driver(driver):
    """HELM_DRIVER must be in the environment the process starts with; re-exec when it is not."""
    if os.environ.get("HELM_DRIVER") != driver:
        env = dict(os.environ, HELM_DRIVER=driver)
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


def deep_merge(base, over):
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = deep_merge(base.get(k), v) if k in base else v
        return out
    return over


def json_arg(text, what):
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        sys.exit(f"helm.py: {what} is not JSON: {e}")
    if not isinstance(value, dict):
        sys.exit(f"helm.py: {what} must be a JSON object")
    return value


class StderrCapture:
    """Collects what the Go library logs on file descriptor 2 (e.g. lint's 'missing required values')."""

    def __enter__(self):
        sys.stderr.flush()
        self.file = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode("utf-8", "replace")
        self.file.close()


def lint(h, args):
    import yaml

    values = json_arg(args.set_json, "--set-json")
    with tempfile.TemporaryDirectory() as tmp:
        chart = os.path.join(tmp, os.path.basename(os.path.abspath(args.chart)))
        shutil.copytree(args.chart, chart)
        if values:
            path = os.path.join(chart, "values.yaml")
            with open(path) as f:
                base = yaml.safe_load(f) or {}
            with open(path, "w") as f:
                yaml.safe_dump(deep_merge(base, values), f, sort_keys=False)
        cfg = h.Configuration(namespace=args.namespace)
        with StderrCapture() as log:
            result = asyncio.run(h.Lint(cfg).run(chart))
    # The bindings serialise each message's error as {}: only severity and path survive.
    messages = [
        {"severity": SEVERITY.get(m.get("Severity"), str(m.get("Severity"))), "path": m.get("Path")}
        for m in result.get("Messages") or []
    ]
    errors = [m for m in messages if m["severity"] == "ERROR"]
    report = {
        "ok": not errors,
        "messages": messages,
        "log": [line for line in log.text.splitlines() if line.strip()],
    }
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


def install(h, args):
    import yaml

    values = json_arg(args.values_json, "--values-json")
    cfg = h.Configuration(namespace=args.namespace, kubeconfig=args.kubeconfig)
    try:
        rel = asyncio.run(
            h.Install(cfg).run(
                args.release,
                args.chart,
                values=values,
                wait=False,
                timeout=args.timeout,
                disable_openapi_validation=True,
            )
        )
    except h.HelmError as e:
        print(f"helm install {args.release}: {e}", file=sys.stderr)
        return 1
    manifest = rel.get("manifest", "")
    if args.json:
        objects = [d for d in yaml.safe_load_all(manifest) if d]
        print(json.dumps(objects))
    else:
        print(manifest)
    return 0


def uninstall(h, args):
    cfg = h.Configuration(namespace=args.namespace, kubeconfig=args.kubeconfig)
    try:
        asyncio.run(h.Uninstall(cfg).run(args.release, wait=False, timeout=args.timeout))
    except h.HelmError as e:
        hint = ""
        if os.environ.get("HELM_DRIVER") == "memory":
            hint = (
                " (the memory driver keeps a release only within the process that installed it:"
                " install and uninstall with --driver secret)"
            )
        print(f"helm uninstall {args.release}: {e}{hint}", file=sys.stderr)
        return 1
    print(f"uninstalled {args.release}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--driver", default="memory", choices=["memory", "secret", "configmap"],
                   help="where Helm keeps release records (HELM_DRIVER)")
    sub = p.add_subparsers(dest="command", required=True)

    pl = sub.add_parser("lint", help="helm lint CHART --set-json VALUES")
    pl.add_argument("chart")
    pl.add_argument("--set-json", default="", help="a JSON object merged over the chart's values.yaml")
    pl.add_argument("--namespace", default="kubelink")

    pi = sub.add_parser("install", help="install CHART and print the rendered manifest")
    pi.add_argument("chart")
    pi.add_argument("--kubeconfig", required=True)
    pi.add_argument("--namespace", required=True)
    pi.add_argument("--release", required=True)
    pi.add_argument("--values-json", default="", help="the values, a JSON object")
    pi.add_argument("--json", action="store_true", help="print a JSON array of the rendered objects")
    pi.add_argument("--timeout", type=int, default=60)

    pu = sub.add_parser("uninstall", help="uninstall a release")
    pu.add_argument("--kubeconfig", required=True)
    pu.add_argument("--namespace", required=True)
    pu.add_argument("--release", required=True)
    pu.add_argument("--timeout", type=int, default=60)

    args = p.parse_args()
    ensure_driver(args.driver)
    try:
        import helm_sdkpy as h
    except ImportError as e:
        print(f"helm.py: the helm-sdkpy package is missing ({e}); run scripts/deps", file=sys.stderr)
        return 2
    return {"lint": lint, "install": install, "uninstall": uninstall}[args.command](h, args)


if __name__ == "__main__":
    sys.exit(main())
