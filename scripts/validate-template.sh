#!/usr/bin/env bash
# Checks template.yaml offline, without credentials. The tools catch different errors
# (docs/local-aws.md §4), so all three run:
#   1. cfn-lint      the SAM template against the CloudFormation and SAM schemas. cfn-lint 1.5x
#                    no longer expands the SAM transform (it only merges Globals), so it never
#                    sees the generated resources, and it skips circular dependencies that
#                    involve AWS::Serverless::* resources
#   2. sam validate  SAM's own translator: rejects malformed Events and SAM properties
#   3. cfn-lint on the SAM transform's output: the generated roles, permissions, event source
#                    mappings and API, e.g. the S3-event circular dependency (E3004) or an
#                    out-of-range ScalingConfig, which both checks above accept
# Exits non-zero at the first failing check.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv-sam/bin/cfn-lint ] || [ ! -x .venv-sam/bin/sam ]; then
  echo "validate-template: .venv-sam (cfn-lint, sam) is missing: run bash scripts/setup.sh" >&2
  exit 1
fi

export SAM_CLI_TELEMETRY=0
export AWS_DEFAULT_REGION=us-east-1

echo "==> cfn-lint template.yaml" >&2
.venv-sam/bin/cfn-lint template.yaml

echo "==> sam validate --region us-east-1 --template-file template.yaml" >&2
.venv-sam/bin/sam validate --region us-east-1 --template-file template.yaml

echo "==> cfn-lint on the SAM transform's output" >&2
.venv-sam/bin/python - template.yaml <<'PY'
import json, sys
from cfnlint.api import ManualArgs, lint
from cfnlint.decode import decode
from samtranslator.parser import parser
from samtranslator.translator.translator import Translator

path = sys.argv[1]
template, problems = decode(path)
if problems:
    sys.exit(f"cannot parse {path}: {problems}")
template = json.loads(json.dumps(template, default=str))
# The transform wants deployable code locations (sam package's job); this check ignores them.
code = "s3://imagejobs-validate/code.zip"
template.get("Globals", {}).get("Function", {}).update(CodeUri=code)
for resource in template.get("Resources", {}).values():
    if resource.get("Type") == "AWS::Serverless::Function":
        resource.setdefault("Properties", {})["CodeUri"] = code
transformed = Translator({}, parser.Parser()).translate(
    sam_template=template, parameter_values={}, feature_toggle=None
)
# W3037 only flags SAM's own SQSPollerPolicy template, which lists sqs:DeleteMessageBatch and
# sqs:ChangeMessageVisibilityBatch (not IAM actions of their own; harmless, not ours to edit).
matches = lint(
    json.dumps(transformed),
    config=ManualArgs(regions=["us-east-1"], ignore_checks=["W3037"]),
)
for m in matches:
    where = "/".join(str(p) for p in m.path) if getattr(m, "path", None) else ""
    print(f"{m.rule.id} {m.message} ({where}, after the SAM transform)", file=sys.stderr)
sys.exit(1 if matches else 0)
PY

echo "validate-template: ok" >&2
