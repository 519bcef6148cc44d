"""Validates gateway.yaml configs against smsgate's JSON Schema with an independent validator (PyPI
`jsonschema`, draft 2020-12), as an editor using the schema would.

Usage: validate_config.py SCHEMA FILE...
Each FILE is a config, or a Kubernetes manifest whose ConfigMap carries a `gateway.yaml` key. Prints `ok <name>` or
`invalid <name>: <path>: <message>` per config and `checked N`; exits 1 if any config is invalid.
"""

import json
import sys

import jsonschema
import yaml


def configs(path):
    text = open(path, encoding="utf-8").read()
    docs = list(yaml.safe_load_all(text))
    for doc in docs:
        if isinstance(doc, dict) and "tenants" in doc:
            yield path, doc
        elif isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
            for key, value in (doc.get("data") or {}).items():
                if key.endswith(("gateway.yaml", "gateway.yml")):
                    yield f"{path} ConfigMap {key}", yaml.safe_load(value)


def main():
    schema = json.load(open(sys.argv[1], encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    jsonschema.Draft202012Validator.check_schema(schema)
    checked, failed = 0, 0
    for path in sys.argv[2:]:
        for name, doc in configs(path):
            checked += 1
            errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
            if errors:
                failed += 1
                for e in errors:
                    where = ".".join(str(p) for p in e.path) or "(top)"
                    print(f"invalid {name}: {where}: {e.message}")
            else:
                print(f"ok {name}")
    print(f"checked {checked}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
