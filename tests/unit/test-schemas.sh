#!/bin/bash
# Checks schemas/*.schema.json and schemas/openapi.yaml against docs/api.md
# with tests/tools/check-schemas.py, then proves the checker catches what it
# must: each case below breaks one thing in a copy of schemas/ and docs/ and
# expects the checker to fail (and check-response.py to name the field).
#
#   tests/unit/test-schemas.sh [SOURCE_ROOT]
#
# Needs /usr/bin/python3 with python3-jsonschema and python3-yaml (Debian);
# exits 77 (skip) without them.

# Single quotes below hold JSON pointers and Python, not shell expansions.
# shellcheck disable=SC2016
set -uo pipefail

root=${1:-$(cd "$(dirname "$0")/../.." && pwd)}
py=/usr/bin/python3
checker=$root/tests/tools/check-schemas.py
response=$root/tests/tools/check-response.py

if ! "$py" -c 'import jsonschema, yaml' 2>/dev/null; then
  echo "test-schemas: SKIP: $py lacks python3-jsonschema or python3-yaml"
  exit 77
fi

tmp=$(mktemp -d /tmp/test-schemas.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok - $1"; }
bad() { failed=$((failed + 1)); echo "not ok - $1"; sed 's/^/#   /' "$tmp/out" | head -20; }

# expect RC PATTERN DESC CMD...: CMD exits RC and its output matches PATTERN
# (an extended regex; '' matches anything).
expect() {
  local want=$1 pat=$2 desc=$3 rc
  shift 3
  "$@" >"$tmp/out" 2>&1
  rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "#   exit $rc, expected $want" >>"$tmp/out"
    bad "$desc"
  elif [ -n "$pat" ] && ! grep -Eq -- "$pat" "$tmp/out"; then
    echo "#   output does not match /$pat/" >>"$tmp/out"
    bad "$desc"
  else
    ok "$desc"
  fi
}

# A fresh copy of the tree the checker reads: $tmp/t/{schemas,docs}.
fresh() {
  rm -rf "$tmp/t"
  mkdir -p "$tmp/t/docs"
  cp -RL "$root/schemas" "$tmp/t/schemas"   # -L: never edit the source through a link
  cp "$root/docs/api.md" "$tmp/t/docs/api.md"
}

# edit FILE PYTHON: runs PYTHON with 'd' the parsed JSON of FILE, writes d.
edit() {
  "$py" - "$1" "$2" <<'EOF'
import json, sys
path, code = sys.argv[1], sys.argv[2]
with open(path) as f:
    d = json.load(f)
exec(code)
with open(path, "w") as f:
    json.dump(d, f, indent=2)
EOF
}

# ---------------------------------------------------------------- the tree
expect 0 'OK$' "the repository's schemas and openapi.yaml pass" \
  "$py" "$checker" --root "$root"

# ------------------------------------------- the checker fails when it must
S=$tmp/t/schemas
fresh; edit "$S/api-cluster.schema.json" 'd["examples"][0]["count"] = 0'
expect 1 'api-cluster.schema.json: examples\[0\]: \$\.count' \
  "an invalid example fails" "$py" "$checker" --root "$tmp/t"

fresh; edit "$S/api-cluster.schema.json" 'd["examples"][0]["counts"]["running"] = 5'
expect 1 'examples\[0\]: \$\.counts' \
  "an example breaking a contract check fails" "$py" "$checker" --root "$tmp/t"

fresh; edit "$S/api-node.schema.json" 'd["x-invalid-examples"].append(d["examples"][0])'
expect 1 'x-invalid-examples\[[0-9]+\]: validates' \
  "an x-invalid-example that validates fails" "$py" "$checker" --root "$tmp/t"

fresh; edit "$S/api-image.schema.json" 'd["properties"]["size"]["type"] = "int"'
expect 1 'api-image.schema.json: not a valid schema' \
  "a schema that is not a schema fails" "$py" "$checker" --root "$tmp/t"

fresh; edit "$S/api-node-list.schema.json" 'd["properties"]["nodes"]["items"]["$ref"] = "urn:thunder:schema:api-nod:1"'
expect 1 'does not resolve' \
  "a schema \$ref that does not resolve fails" "$py" "$checker" --root "$tmp/t"

fresh; edit "$S/api-heartbeat.schema.json" 'd["$id"] = "urn:thunder:schema:heartbeat:1"'
expect 1 '\$id is' "a wrong \$id fails" "$py" "$checker" --root "$tmp/t"

fresh; edit "$S/api-health.schema.json" 'd["examples"] = d["examples"][:1]'
expect 1 'fewer than 2 examples' \
  "an api schema with one example fails" "$py" "$checker" --root "$tmp/t"

fresh; edit "$S/api-image.schema.json" 'd["properties"]["version"]["pattern"] = "^[\\d]{64}$"'
expect 1 'differ between Python and ECMA' \
  "a pattern with \\d fails" "$py" "$checker" --root "$tmp/t"

fresh; printf '{"a": 1, "a": 2}\n' >"$S/api-zz.schema.json"
expect 1 'api-zz.schema.json: not valid JSON: duplicate key' \
  "a schema file with a duplicate key fails" "$py" "$checker" --root "$tmp/t"

fresh; sed -i "s|'./api-cluster-tree.schema.json'|'./api-cluster-trees.schema.json'|" "$S/openapi.yaml"
expect 1 'no such file' \
  "an openapi \$ref to a missing file fails" "$py" "$checker" --root "$tmp/t"

fresh; sed -i "s|'./api-cluster.schema.json#/\$defs/vm'|'./api-cluster.schema.json#/\$defs/vms'|" "$S/openapi.yaml"
expect 1 'does not resolve' \
  "an openapi \$ref to a missing pointer fails" "$py" "$checker" --root "$tmp/t"

fresh; sed -i 's|^  /v1/clusters/{id}/tree:|  /v1/clusters/{id}/trees:|' "$S/openapi.yaml"
expect 1 'GET /v1/clusters/\{id\}/tree of docs/api.md is missing' \
  "a route of docs/api.md missing from openapi.yaml fails" "$py" "$checker" --root "$tmp/t"

fresh; sed -i 's|^### Service|`GET /v1/version` — the version.\n\n### Service|' "$tmp/t/docs/api.md"
expect 1 'GET /v1/version of docs/api.md is missing' \
  "a route added to docs/api.md fails" "$py" "$checker" --root "$tmp/t"

fresh; sed -i 's/^| 502 | `bad_gateway` |/| 502 | `gateway` |/' "$tmp/t/docs/api.md"
expect 1 'x-status-codes' \
  "an error table that differs from api-error fails" "$py" "$checker" --root "$tmp/t"

fresh; sed -i 's|^  /metrics:|  /healthz:|' "$S/openapi.yaml"
expect 1 'duplicate key' \
  "openapi.yaml with a duplicate path fails" "$py" "$checker" --root "$tmp/t"

fresh; "$py" - "$S/openapi.yaml" <<'EOF'
import re, sys
p = sys.argv[1]; s = open(p).read()
# drop the 404 of GET /v1/clusters/{id}/tree (the last 404 of the file)
i = s.rindex('        "404":\n')
s = s[:i] + s[i:].split('\n', 2)[2]
open(p, "w").write(s)
EOF
expect 1 'GET /v1/clusters/\{id\}/tree: no response 404' \
  "an operation without a documented status fails" "$py" "$checker" --root "$tmp/t"

# ------------------------------------------------------- check-response.py
fresh
"$py" - "$S" "$tmp/ex" <<'EOF'
import json, os, sys
sdir, out = sys.argv[1], sys.argv[2]
os.makedirs(out)
for fn in sorted(os.listdir(sdir)):
    if fn.startswith("api-") and fn.endswith(".schema.json"):
        d = json.load(open(os.path.join(sdir, fn)))
        for i, ex in enumerate(d["examples"]):
            with open(os.path.join(out, "%s.%d.json" % (fn[:-12], i)), "w") as f:
                json.dump(ex, f)
EOF
n=0
for f in "$tmp"/ex/*.json; do
  b=$(basename "$f"); s=${b%%.*}
  if "$py" "$response" --schemas "$S" "$s" "$f" >"$tmp/out" 2>&1 &&
     "$py" "$response" --schemas "$S" "$s.schema.json" - <"$f" >>"$tmp/out" 2>&1; then
    n=$((n + 1))
  else
    bad "check-response accepts example $b"
  fi
done
total=$(find "$tmp/ex" -name '*.json' | wc -l)
if [ "$n" -eq "$total" ] && [ "$total" -ge 26 ]; then
  ok "check-response accepts all $n examples (file and stdin)"
else
  echo "#   $n of $total examples accepted (26 or more expected)" >"$tmp/out"
  bad "check-response accepts every example"
fi

c=$tmp/ex/api-cluster.0.json
"$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["vms"][3]["state"]="crashed"; json.dump(d,open(sys.argv[2],"w"))' "$c" "$tmp/b1.json"
expect 1 '^.*b1\.json: \$\.vms\[3\]\.state: .crashed. is not one of' \
  "check-response names the failing field" "$py" "$response" --schemas "$S" api-cluster "$tmp/b1.json"

"$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["vms"][1]["name"]="web-0007"; json.dump(d,open(sys.argv[2],"w"))' "$c" "$tmp/b2.json"
expect 1 '\$\.vms\[1\]\.name: .web-0007. is not .web-0001.' \
  "check-response checks VM names against the cluster" "$py" "$response" --schemas "$S" api-cluster "$tmp/b2.json"

"$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["count"]=7; json.dump(d,open(sys.argv[2],"w"))' "$c" "$tmp/b3.json"
expect 1 '\$\.counts: add up to 6, not count 7' \
  "check-response checks counts against count" "$py" "$response" --schemas "$S" api-cluster "$tmp/b3.json"

"$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["nodes"].reverse(); json.dump(d,open(sys.argv[2],"w"))' "$tmp/ex/api-node-list.0.json" "$tmp/b4.json"
expect 1 '\$\.nodes\[1\]\.name: .node1. is not after .node2.' \
  "check-response checks the order of nodes" "$py" "$response" --schemas "$S" api-node-list "$tmp/b4.json"

"$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); d["nodes"][2]["upstreams"][-1]="nbd://10.0.0.9:10809/debian12"; json.dump(d,open(sys.argv[2],"w"))' "$tmp/ex/api-cluster-tree.0.json" "$tmp/b5.json"
expect 1 '\$\.nodes\[2\]\.upstreams\[2\]: .* is not the origin' \
  "check-response checks that the origin is the last upstream" "$py" "$response" --schemas "$S" api-cluster-tree "$tmp/b5.json"

printf '{"status": "ok", "db": "ok", "db": "ok"}' >"$tmp/b6.json"
expect 1 'duplicate key' "check-response refuses a duplicate key" \
  "$py" "$response" --schemas "$S" api-health "$tmp/b6.json"

printf '{"name": "node1\\n", "state": "ready"}' >"$tmp/b7.json"
expect 1 '\$\.name: .* does not match' "check-response: \$ does not match before a final newline" \
  "$py" "$response" --schemas "$S" api-heartbeat "$tmp/b7.json"

"$py" -c 'import sys; s=open(sys.argv[1]).read().replace("\"size\": 2147483648", "\"size\": 2147483648.0"); open(sys.argv[2],"w").write(s)' "$tmp/ex/api-image.0.json" "$tmp/b8.json"
expect 1 '\$\.size: .* is not of type .integer.' "check-response refuses 1.0 as an integer" \
  "$py" "$response" --schemas "$S" api-image "$tmp/b8.json"

printf '{"error": {"code": "bad_request", "message": "name: missing"}}' >"$tmp/e.json"
expect 0 '' "check-response --status 400 accepts bad_request" \
  "$py" "$response" --schemas "$S" --status 400 api-error "$tmp/e.json"
expect 1 '\$\.error\.code: .bad_request. is not a code of status 404' \
  "check-response --status 404 refuses bad_request" \
  "$py" "$response" --schemas "$S" --status 404 api-error "$tmp/e.json"
expect 1 'status 400 with a api-health body' "check-response --status 400 refuses a success body" \
  "$py" "$response" --schemas "$S" --status 400 api-health "$tmp/ex/api-health.0.json"

printf 'not json' >"$tmp/b9.json"
expect 1 'not strict JSON' "check-response refuses a body that is not JSON" \
  "$py" "$response" --schemas "$S" api-health "$tmp/b9.json"
expect 2 'no schema api-nope' "check-response: an unknown schema is a usage error" \
  "$py" "$response" --schemas "$S" api-nope "$tmp/e.json"
expect 2 'No such file' "check-response: a missing file is an I/O error" \
  "$py" "$response" --schemas "$S" api-error "$tmp/missing.json"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
