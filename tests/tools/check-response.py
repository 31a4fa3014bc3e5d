#!/usr/bin/python3
"""check-response.py [--schemas DIR] [--status N] SCHEMA FILE|-

Validates one thunder-api body captured by an integration test against
schemas/SCHEMA.schema.json and the contract checks JSON Schema cannot
express; prints 'FILE: $.path: why' per failure.  Exit 0 valid, 1 invalid,
2 usage or I/O error.  It is the 'response' mode of check-schemas.py.

  curl -s ... -o body.json && check-response.py api-cluster body.json
  st=$(curl -s -o err.json -w '%{http_code}' ...)
  check-response.py --status "$st" api-error err.json
"""
import importlib.util
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location(
    "check_schemas", os.path.join(_here, "check-schemas.py"))
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)

if __name__ == "__main__":
    sys.exit(_mod.main(["response"] + sys.argv[1:]))
