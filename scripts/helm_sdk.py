"""`helm lint` and `helm template` for the tests, through Helm's own Go SDK.

No package registry reachable here carries the helm binary; PyPI's helm-python-sdk (pinned in
scripts/tools-requirements.txt) carries Helm's Go SDK built as a C library, with the chart
loader, the linter and the template engine the helm CLI runs. This script is the thin CLI the
tests call, run with .tools/venv/bin/python:

    helm_sdk.py lint CHART [-f VALUES.yaml] [--kube-version v1.30.0]
        Helm's linter with --strict (warnings fail too); exit 1 on any finding above INFO.
    helm_sdk.py template CHART [-f VALUES.yaml] [--name NAME] [--namespace NS]
        The rendered manifests on stdout, like `helm template` (NOTES.txt and empty templates
        left out, each document headed by `# Source:`); a render error exits 1.
"""

import argparse
import sys

import helm_python as helm


def values(path):
    if path is None:
        return None
    with open(path, encoding="utf-8") as f:
        return helm.values_from_yaml(f.read())


def lint(args):
    report = helm.lint(
        args.chart,
        values(args.values),
        strict=True,
        kube_version=args.kube_version,
        namespace=args.namespace,
    )
    names = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    failed = False
    for message in report.get("messages") or []:
        severity = message.get("severity", 0)
        print(f"[{names.get(severity, severity)}] {message.get('path')}: {message.get('error')}")
        failed |= severity != 1
    for error in report.get("errors") or []:
        print(f"[ERROR] {error}")
        failed = True
    if report.get("total_charts_linted") != 1:
        print(f"[ERROR] linted {report.get('total_charts_linted')} charts, expected 1")
        failed = True
    print(f"helm (SDK {helm.helm_sdk_version()}) lint: {'FAILED' if failed else 'passed'}")
    return 1 if failed else 0


def template(args):
    with helm.Chart.load(args.chart) as chart:
        rendered = chart.render(
            values(args.values), name=args.name, namespace=args.namespace, is_install=True
        )
    for path in sorted(rendered):
        text = rendered[path].strip()
        if path.endswith("NOTES.txt") or not text:
            continue
        # Helm's own output format: one `---` and a `# Source:` comment per template.
        sys.stdout.write(f"---\n# Source: {path}\n{text}\n")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("lint", "template"):
        command = commands.add_parser(name)
        command.add_argument("chart")
        command.add_argument("-f", "--values")
        command.add_argument("--namespace", default="default")
        if name == "lint":
            command.add_argument("--kube-version")
        else:
            command.add_argument("--name", default="release-name")
    args = parser.parse_args()
    try:
        return lint(args) if args.command == "lint" else template(args)
    except helm.HelmError as error:
        print(f"helm: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
