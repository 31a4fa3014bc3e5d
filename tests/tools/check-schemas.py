#!/usr/bin/python3
"""Checks thunder's JSON Schemas, the thunder-api OpenAPI file, and bodies.

  check-schemas.py [--root DIR]
      Checks the repository at DIR (default: two levels above this file):
      - every schemas/*.schema.json is a valid draft 2020-12 schema with
        $id urn:thunder:schema:NAME:1, a title, a description and examples;
        every $ref in it resolves; its patterns compile and use no escape
        whose meaning differs between Python and ECMA-262 (\\d \\w \\s \\b);
      - every example validates (and passes the contract checks below), every
        x-invalid-examples entry fails validation;
      - schemas/openapi.yaml parses (no duplicate key), is OpenAPI 3.0.3,
        every $ref in it resolves to an existing file and JSON pointer, every
        api-*.schema.json is referenced, every path parameter is declared;
      - the routes of docs/api.md ('## Routes') and the operations of
        openapi.yaml are the same set, and the error table of docs/api.md
        matches x-status-codes of api-error.schema.json.
      Prints one line per failure, naming the file and the field; exit 1 on
      any failure.

  check-schemas.py response [--schemas DIR] [--status N] SCHEMA FILE|-
      Validates one captured body (check-response.py is this mode) against
      schemas/SCHEMA.schema.json (SCHEMA: api-cluster, or
      api-cluster.schema.json), then runs the contract checks that JSON
      Schema cannot express (sort orders, counts, VM ids; see
      contract_checks).  With --status N and SCHEMA api-error, the error
      code must be one the status may carry.  Prints 'FILE: $.path: why'
      for each failure; exit 1 when the body is invalid, 2 on a usage or
      I/O error.

Patterns are matched as ECMA-262 does: '$' at the end of a pattern matches
only at the end of the string (Python's re would also match before a final
newline).  "integer" means a JSON number without fraction or exponent (1,
not 1.0), as json-c writes and checks them.  Needs python3-jsonschema and
python3-yaml (Debian 12).
"""

import argparse
import json
import os
import re
import sys

try:
    import jsonschema
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError, RefResolutionError
    import yaml
except ImportError as exc:  # pragma: no cover
    sys.stderr.write("check-schemas: %s (apt-get install python3-jsonschema "
                     "python3-yaml)\n" % exc)
    sys.exit(77)

DRAFT = "https://json-schema.org/draft/2020-12/schema"
ID_FMT = "urn:thunder:schema:%s:1"
SUFFIX = ".schema.json"
BAD_ESCAPES = re.compile(r"(?<!\\)(?:\\\\)*\\[dDwWsSbB]")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


class Failures:
    def __init__(self):
        self.items = []

    def add(self, where, msg):
        self.items.append("%s: %s" % (where, msg))


# ------------------------------------------------------------------ loading

def _no_dup_pairs(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError("duplicate key %r" % k)
        d[k] = v
    return d


def _bad_constant(name):
    raise ValueError("%s is not JSON" % name)


def load_json_text(text):
    """Parses strict JSON: no duplicate key, no NaN or Infinity."""
    return json.loads(text, object_pairs_hook=_no_dup_pairs,
                      parse_constant=_bad_constant)


def load_json_file(path):
    with open(path, "rb") as f:
        raw = f.read()
    return load_json_text(raw.decode("utf-8"))


class _NoDupLoader(yaml.SafeLoader):
    pass


def _yaml_mapping(loader, node, deep=False):
    keys = set()
    for knode, _ in node.value:
        key = loader.construct_object(knode, deep=deep)
        if key in keys:
            raise yaml.constructor.ConstructorError(
                None, None, "duplicate key %r" % (key,), knode.start_mark)
        keys.add(key)
    return loader.construct_mapping(node, deep=deep)


_NoDupLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _yaml_mapping)


# ------------------------------------------------------------- validators

def _ecma_pattern(validator, pattern, instance, schema):
    if not validator.is_type(instance, "string"):
        return
    p = pattern
    if p.endswith("$") and not p.endswith("\\$"):
        p = p[:-1] + r"\Z"
    if not re.search(p, instance):
        yield ValidationError("%r does not match %r" % (instance, pattern))


def _strict_int(checker, instance):
    return isinstance(instance, int) and not isinstance(instance, bool)


Validator = jsonschema.validators.extend(
    Draft202012Validator, validators={"pattern": _ecma_pattern},
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", _strict_int))


def json_path(path):
    out = "$"
    for p in path:
        if isinstance(p, int):
            out += "[%d]" % p
        elif re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", p):
            out += "." + p
        else:
            out += "[%s]" % json.dumps(p)
    return out


def _leaf_errors(err):
    """The deepest errors under err: an allOf/if-then failure names the
    field that broke, not the object holding it."""
    if not err.context:
        return [err]
    out = []
    for sub in err.context:
        out.extend(_leaf_errors(sub))
    return out


def validation_errors(validator, instance):
    """[(path, message)] of every error, sorted by path."""
    leaves = []
    for err in validator.iter_errors(instance):
        leaves.extend(_leaf_errors(err))
    # A property that fails inside a $ref is also "unevaluated" (failed
    # subschemas evaluate nothing): report that only when nothing else fails.
    real = [e for e in leaves if e.validator != "unevaluatedProperties"]
    return sorted({(json_path(e.absolute_path), e.message)
                   for e in (real or leaves)})


class _LocalResolver(jsonschema.RefResolver):
    """Resolves only the $ids of the schema set: never the network."""

    def resolve_remote(self, uri):
        raise RefResolutionError("no schema with $id %s in schemas/" % uri)


class SchemaSet:
    """Every schemas/*.schema.json of a directory, keyed by NAME."""

    def __init__(self, directory, fails=None):
        self.dir = directory
        self.schemas = {}
        self.paths = {}
        self.fails = fails
        for fn in sorted(os.listdir(directory)):
            if not fn.endswith(SUFFIX):
                continue
            path = os.path.join(directory, fn)
            try:
                self.schemas[fn[:-len(SUFFIX)]] = load_json_file(path)
                self.paths[fn[:-len(SUFFIX)]] = path
            except (OSError, ValueError, UnicodeDecodeError) as exc:
                if fails is None:
                    raise
                fails.add(path, "not valid JSON: %s" % exc)
        self.store = {}
        for s in self.schemas.values():
            if isinstance(s, dict) and isinstance(s.get("$id"), str):
                self.store[s["$id"]] = s

    def validator(self, name):
        schema = self.schemas[name]
        resolver = _LocalResolver.from_schema(schema, store=self.store)
        return Validator(schema, resolver=resolver)


# ------------------------------------------------------- contract checks

def _counts(fail, where, c):
    counts = c.get("counts", {})
    total = sum(v for v in counts.values() if isinstance(v, int))
    if total != c.get("count"):
        fail(where + ".counts", "add up to %d, not count %r"
             % (total, c.get("count")))


def _check_cluster(fail, c, where="$"):
    _counts(fail, where, c)
    vms = c.get("vms", [])
    if len(vms) != c.get("count"):
        fail(where + ".vms", "has %d VMs, not count %r"
             % (len(vms), c.get("count")))
    tally = {}
    width = None
    for i, vm in enumerate(vms):
        w = "%s.vms[%d]" % (where, i)
        tally[vm.get("state")] = tally.get(vm.get("state"), 0) + 1
        if vm.get("index") != i:
            fail(w + ".index", "is %r, not %d" % (vm.get("index"), i))
        m = re.match(r"^(.*)-([0-9]+)$", vm.get("id", ""))
        if m is None or m.group(1) != c.get("id") or int(m.group(2)) != i:
            fail(w + ".id", "%r is not %s-%04d" % (vm.get("id"),
                                                   c.get("id"), i))
        else:
            width = width or len(m.group(2))
            if len(m.group(2)) != width:
                fail(w + ".id", "index width %d, not %d like VM 0"
                     % (len(m.group(2)), width))
        expect = "%s-%0*d" % (c.get("name"), width or 4, i)
        if vm.get("name") != expect:
            fail(w + ".name", "%r is not %r" % (vm.get("name"), expect))
    for state, n in (c.get("counts") or {}).items():
        if tally.get(state, 0) != n:
            fail("%s.counts.%s" % (where, state), "is %r but %d VMs are %s"
                 % (n, tally.get(state, 0), state))


def _check_sorted(fail, items, key, where, strict):
    for i in range(1, len(items)):
        a, b = items[i - 1].get(key), items[i].get(key)
        if not isinstance(a, str) or not isinstance(b, str):
            continue
        if (a >= b) if strict else (a > b):
            fail("%s[%d].%s" % (where, i, key), "%r is not after %r (%s)"
                 % (b, a, "sorted, unique" if strict else "oldest first"))


def _check_tree(fail, t):
    nodes = t.get("nodes", [])
    by_name = {}
    for i, n in enumerate(nodes):
        if n.get("node") in by_name:
            fail("$.nodes[%d].node" % i, "%r appears twice" % n.get("node"))
        by_name[n.get("node")] = n
    image, origin = t.get("image"), t.get("origin")
    for i, n in enumerate(nodes):
        w = "$.nodes[%d]" % i
        p = n.get("parent")
        if p is not None:
            if p not in by_name:
                fail(w + ".parent", "%r is not a node of the tree" % p)
            elif by_name[p].get("depth", 0) + 1 != n.get("depth"):
                fail(w + ".depth", "is %r, not its parent's depth + 1 (%r)"
                     % (n.get("depth"), by_name[p].get("depth", 0) + 1))
        ups = n.get("upstreams", [])
        for j, u in enumerate(ups):
            if not u.endswith("/" + str(image)):
                fail("%s.upstreams[%d]" % (w, j),
                     "%r does not export image %r" % (u, image))
        if ups and ups[-1] != "%s/%s" % (origin, image):
            fail("%s.upstreams[%d]" % (w, len(ups) - 1),
                 "%r is not the origin %s/%s" % (ups[-1], origin, image))
        if len(n.get("upstream_bytes", [])) != len(ups):
            fail(w + ".upstream_bytes", "has %d entries for %d upstreams"
                 % (len(n.get("upstream_bytes", [])), len(ups)))
    depths = [n.get("depth", 0) for n in nodes]
    if depths and t.get("depth") != max(depths):
        fail("$.depth", "is %r, the deepest node is at %d"
             % (t.get("depth"), max(depths)))
    top = sum(1 for n in nodes if n.get("parent") is None)
    if nodes and t.get("origin_children") != top:
        fail("$.origin_children", "is %r, %d nodes have the origin as parent"
             % (t.get("origin_children"), top))


def contract_checks(name, body):
    """[(path, message)] of the rules JSON Schema cannot express.  Call only
    on a body that validated."""
    out = []

    def fail(path, msg):
        out.append((path, msg))

    if name == "api-node-list":
        _check_sorted(fail, body["nodes"], "name", "$.nodes", True)
    elif name == "api-image-list":
        names = [i["name"] for i in body["images"]]
        for i, n in enumerate(names):
            if n in names[:i]:
                fail("$.images[%d].name" % i, "%r appears twice" % n)
    elif name == "api-cluster":
        _check_cluster(fail, body)
    elif name == "api-cluster-list":
        _check_sorted(fail, body["clusters"], "created_at", "$.clusters",
                      False)
        ids = set()
        for i, c in enumerate(body["clusters"]):
            _counts(fail, "$.clusters[%d]" % i, c)
            if c["id"] in ids:
                fail("$.clusters[%d].id" % i, "%r appears twice" % c["id"])
            ids.add(c["id"])
    elif name == "api-cluster-tree":
        _check_tree(fail, body)
    return out


# ------------------------------------------------------- schema checks

def _walk(node, path=()):
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, path + (i,))


def _ptr(path):
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1")
                          for p in path)


def _resolve_pointer(doc, pointer):
    """The node at JSON pointer 'pointer' (without '#'), or raises KeyError."""
    if pointer in ("", "/"):
        return doc
    node = doc
    for part in pointer.lstrip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(part)]
        elif isinstance(node, dict):
            node = node[part]
        else:
            raise KeyError(part)
    return node


def check_schema_file(ss, name, fails):
    path = ss.paths[name]
    s = ss.schemas[name]
    if not isinstance(s, dict):
        fails.add(path, "not a JSON object")
        return False
    try:
        Draft202012Validator.check_schema(s)
    except jsonschema.exceptions.SchemaError as exc:
        fails.add(path, "not a valid schema: %s: %s"
                  % (json_path(exc.absolute_path), exc.message))
        return False
    if s.get("$schema") != DRAFT:
        fails.add(path, "$schema is not %s" % DRAFT)
    if s.get("$id") != ID_FMT % name:
        fails.add(path, "$id is %r, not %r" % (s.get("$id"), ID_FMT % name))
    for key in ("title", "description"):
        if not isinstance(s.get(key), str) or not s[key].strip():
            fails.add(path, "no %s" % key)
    if s.get("type") != "object" or not (
            s.get("additionalProperties") is False
            or s.get("unevaluatedProperties") is False):
        fails.add(path, "the top level is not a closed object (type object "
                  "with additionalProperties or unevaluatedProperties false)")
    examples = s.get("examples")
    if not isinstance(examples, list):
        examples = []
    if len(examples) < 2:
        # The api-* schemas must have two; older ones are only warned about.
        if name.startswith("api-"):
            fails.add(path, "fewer than 2 examples")
        else:
            print("%s: warning: %d examples (2 wanted)"
                  % (path, len(examples)))

    # $refs and patterns
    for p, node in _walk(s):
        if not isinstance(node, dict):
            continue
        ref = node.get("$ref")
        if (isinstance(ref, str) and "examples" not in p
                and "x-invalid-examples" not in p):
            try:
                resolver = _LocalResolver.from_schema(s, store=ss.store)
                resolver.resolve(ref)
            except (RefResolutionError, KeyError, ValueError) as exc:
                fails.add(path, "%s/$ref %r does not resolve: %s"
                          % (_ptr(p), ref, exc))
        pat = node.get("pattern")
        if (isinstance(pat, str) and "examples" not in p
                and "x-invalid-examples" not in p
                and "properties" != (p[-1] if p else None)):
            try:
                re.compile(pat)
            except re.error as exc:
                fails.add(path, "%s/pattern %r: %s" % (_ptr(p), pat, exc))
            if BAD_ESCAPES.search(pat):
                fails.add(path, "%s/pattern %r: \\d \\w \\s \\b differ "
                          "between Python and ECMA-262; write a class"
                          % (_ptr(p), pat))
            if name.startswith("api-") and not (
                    pat.startswith("^") and pat.endswith("$")):
                fails.add(path, "%s/pattern %r is not anchored with ^ and $"
                          % (_ptr(p), pat))

    return True


def check_examples(ss, name, fails):
    path = ss.paths[name]
    s = ss.schemas[name]
    examples = s.get("examples")
    if not isinstance(examples, list):
        examples = []
    v = ss.validator(name)
    for i, ex in enumerate(examples):
        where = "%s: examples[%d]" % (path, i)
        errs = validation_errors(v, ex)
        for fp, msg in errs:
            fails.add(where, "%s: %s" % (fp, msg))
        if not errs:
            for fp, msg in contract_checks(name, ex):
                fails.add(where, "%s: %s" % (fp, msg))
    invalid = s.get("x-invalid-examples", [])
    if not isinstance(invalid, list):
        fails.add(path, "x-invalid-examples is not an array")
        invalid = []
    for i, ex in enumerate(invalid):
        if not validation_errors(v, ex):
            fails.add("%s: x-invalid-examples[%d]" % (path, i),
                      "validates, but must fail: %s"
                      % json.dumps(ex)[:200])


# ------------------------------------------------------ openapi checks

ROUTE_RE = re.compile(
    r"(^|\n)`(GET|POST|PUT|DELETE|PATCH) (/[^`\s]*)`"
    r"|`(GET|POST|PUT|DELETE|PATCH) (/[^`\s?]*)`\s*\u2014")


def doc_routes(text):
    """{(METHOD, PATH)} defined in the '## Routes' section: a route in
    backquotes that starts a line or is followed by an em dash.  Routes
    mentioned in passing (a node's endpoint in parentheses) do not count."""
    m = re.search(r"^## Routes\s*$(.*?)(?=^## )", text, re.M | re.S)
    if m is None:
        return None
    routes = set()
    for r in ROUTE_RE.finditer(m.group(1)):
        method = r.group(2) or r.group(4)
        path = (r.group(3) or r.group(5)).split("?")[0]
        routes.add((method, path))
    return routes


def doc_error_codes(text):
    """{status: [codes]} of the table in '## Errors and limits'."""
    m = re.search(r"^## Errors and limits\s*$(.*?)(?=^## )", text,
                  re.M | re.S)
    if m is None:
        return None
    out = {}
    for r in re.finditer(r"^\|\s*([0-9]{3})\s*\|\s*`([a-z_]+)`", m.group(1),
                         re.M):
        out.setdefault(r.group(1), []).append(r.group(2))
    return out


def check_openapi(root, ss, fails):
    path = os.path.join(root, "schemas", "openapi.yaml")
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=_NoDupLoader)
    except (OSError, yaml.YAMLError) as exc:
        fails.add(path, "cannot be read: %s" % exc)
        return
    if not isinstance(doc, dict):
        fails.add(path, "not a YAML mapping")
        return
    if doc.get("openapi") != "3.0.3":
        fails.add(path, "openapi is %r, not '3.0.3'" % doc.get("openapi"))
    for key in ("info", "paths", "components"):
        if not isinstance(doc.get(key), dict):
            fails.add(path, "no %s" % key)
            return
    referenced = set()
    files = {}
    for p, node in _walk(doc):
        if not isinstance(node, dict) or "$ref" not in node:
            continue
        ref = node["$ref"]
        where = "%s: %s/$ref %r" % (path, _ptr(p), ref)
        if not isinstance(ref, str):
            fails.add(where, "is not a string")
            continue
        target, _, frag = ref.partition("#")
        try:
            if target == "":
                _resolve_pointer(doc, frag)
                continue
            m = re.match(r"^\./([A-Za-z0-9._-]+\.schema\.json)$", target)
            if m is None:
                fails.add(where, "is not #/... or ./NAME.schema.json")
                continue
            fpath = os.path.join(root, "schemas", m.group(1))
            if fpath not in files:
                files[fpath] = load_json_file(fpath)
            referenced.add(m.group(1)[:-len(SUFFIX)])
            _resolve_pointer(files[fpath], frag)
        except OSError as exc:
            fails.add(where, "no such file: %s" % exc.strerror)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            fails.add(where, "does not resolve: %s" % exc)
    for name in ss.schemas:
        if name.startswith("api-") and name not in referenced:
            fails.add(path, "does not reference %s%s" % (name, SUFFIX))

    schemes = doc["components"].get("securitySchemes", {}) or {}
    ops = set()
    for route, item in doc["paths"].items():
        if not isinstance(item, dict):
            fails.add(path, "paths[%r] is not a mapping" % route)
            continue
        params = set(re.findall(r"\{([^}]+)\}", route))
        common = item.get("parameters", [])
        for method, op in item.items():
            if method not in METHODS:
                continue
            where = "%s: %s %s" % (path, method.upper(), route)
            ops.add((method.upper(), route))
            declared = set()
            for prm in list(common) + list(op.get("parameters", [])):
                if "$ref" in prm:
                    try:
                        prm = _resolve_pointer(doc, prm["$ref"].lstrip("#"))
                    except (KeyError, IndexError, ValueError):
                        continue
                if prm.get("in") == "path":
                    declared.add(prm.get("name"))
            if declared != params:
                fails.add(where, "path parameters %s declared, %s in the "
                          "path" % (sorted(declared), sorted(params)))
            if not op.get("responses"):
                fails.add(where, "no responses")
            for req in op.get("security", doc.get("security", [])) or []:
                for sname in req:
                    if sname not in schemes:
                        fails.add(where, "security scheme %r is not in "
                                  "components.securitySchemes" % sname)
            responses = op.get("responses") or {}
            for status, resp in responses.items():
                if str(status)[0] not in "45":
                    continue
                try:
                    if "$ref" in resp:
                        resp = _resolve_pointer(doc, resp["$ref"].lstrip("#"))
                    ref = (((resp.get("content") or {})
                            .get("application/json") or {})
                           .get("schema") or {}).get("$ref", "")
                except (KeyError, IndexError, ValueError, AttributeError):
                    continue  # reported with the $refs above
                if ref != "./api-error.schema.json":
                    fails.add(where, "response %s has no api-error body"
                              % status)
            # The statuses docs/api.md gives every route of its kind.
            want = {"500"}
            if route.startswith("/v1/"):
                want |= {"401", "503"}
            if "requestBody" in op:
                want |= {"400", "413", "415"}
            if params:
                want.add("404")
            have = {str(k) for k in responses}
            for st in sorted(want - have):
                fails.add(where, "no response %s" % st)
            if not any(str(k).startswith("2") for k in responses):
                fails.add(where, "no 2xx response")
    create = (doc["paths"].get("/v1/clusters") or {}).get("post") or {}
    names = set()
    for prm in create.get("parameters", []):
        try:
            if "$ref" in prm:
                prm = _resolve_pointer(doc, prm["$ref"].lstrip("#"))
            names.add((prm.get("in"), prm.get("name")))
        except (KeyError, IndexError, ValueError):
            pass
    if ("header", "Idempotency-Key") not in names:
        fails.add(path, "POST /v1/clusters has no Idempotency-Key header")
    loc = ((create.get("responses") or {}).get("202") or {}).get("headers")
    if not loc or "Location" not in loc:
        fails.add(path, "POST /v1/clusters 202 has no Location header")

    docs = os.path.join(root, "docs", "api.md")
    try:
        with open(docs, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        fails.add(docs, "cannot be read: %s" % exc.strerror)
        return
    routes = doc_routes(text)
    if not routes:
        fails.add(docs, "no routes found in a '## Routes' section")
        return
    for method, route in sorted(routes - ops):
        fails.add(path, "%s %s of docs/api.md is missing" % (method, route))
    for method, route in sorted(ops - routes):
        fails.add(path, "%s %s is not a route of docs/api.md"
                  % (method, route))
    codes = doc_error_codes(text)
    err = ss.schemas.get("api-error", {})
    if not codes:
        fails.add(docs, "no error table found in '## Errors and limits'")
    elif codes != err.get("x-status-codes"):
        fails.add(ss.paths.get("api-error", "api-error"),
                  "x-status-codes %s differ from the table of docs/api.md %s"
                  % (json.dumps(err.get("x-status-codes"), sort_keys=True),
                     json.dumps(codes, sort_keys=True)))


def check_repo(root):
    fails = Failures()
    sdir = os.path.join(root, "schemas")
    ss = SchemaSet(sdir, fails)
    if not ss.schemas:
        fails.add(sdir, "no *%s files" % SUFFIX)
    good = [n for n in ss.schemas if check_schema_file(ss, n, fails)]
    if len(good) == len(ss.schemas):
        for name in ss.schemas:
            try:
                check_examples(ss, name, fails)
            except jsonschema.exceptions.UnknownType as exc:
                fails.add(ss.paths[name], "examples: unknown type %r"
                          % exc.type)
            except RefResolutionError as exc:
                fails.add(ss.paths[name], "examples: %s" % exc)
    else:
        fails.add(sdir, "examples not checked: %d schemas are not valid"
                  % (len(ss.schemas) - len(good)))
    check_openapi(root, ss, fails)
    for line in fails.items:
        print(line)
    n = len(ss.schemas)
    if fails.items:
        print("check-schemas: %d failures in %d schemas and openapi.yaml"
              % (len(fails.items), n))
        return 1
    print("check-schemas: %d schemas and openapi.yaml OK" % n)
    return 0


# ------------------------------------------------------- response mode

def check_response(sdir, name, file, status):
    if name.endswith(SUFFIX):
        name = name[:-len(SUFFIX)]
    try:
        ss = SchemaSet(sdir)
    except (OSError, ValueError) as exc:
        sys.stderr.write("check-response: %s: %s\n" % (sdir, exc))
        return 2
    if name not in ss.schemas:
        sys.stderr.write("check-response: no schema %s%s in %s\n"
                         % (name, SUFFIX, sdir))
        return 2
    label = "<stdin>" if file == "-" else file
    try:
        if file == "-":
            raw = sys.stdin.buffer.read()
        else:
            with open(file, "rb") as f:
                raw = f.read()
    except OSError as exc:
        sys.stderr.write("check-response: %s: %s\n" % (file, exc.strerror))
        return 2
    try:
        body = load_json_text(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        print("%s: $: not strict JSON: %s" % (label, exc))
        return 1
    try:
        errs = validation_errors(ss.validator(name), body)
    except (RefResolutionError, jsonschema.exceptions.UnknownType,
            jsonschema.exceptions.SchemaError) as exc:
        sys.stderr.write("check-response: %s%s is broken: %s\n"
                         % (name, SUFFIX, exc))
        return 2
    if not errs:
        errs = contract_checks(name, body)
    if status is not None and not errs:
        if name == "api-error":
            allowed = ss.schemas[name].get("x-status-codes", {}).get(
                str(status))
            if allowed is None:
                errs.append(("$", "status %d is not an error status of "
                             "the API" % status))
            elif body["error"]["code"] not in allowed:
                errs.append(("$.error.code", "%r is not a code of status %d "
                             "(%s)" % (body["error"]["code"], status,
                                       ", ".join(allowed))))
        elif not 200 <= status < 300:
            errs.append(("$", "status %d with a %s body (expected 2xx)"
                         % (status, name)))
    for fp, msg in errs:
        print("%s: %s: %s" % (label, fp, msg))
    return 1 if errs else 0


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    default_root = os.path.dirname(os.path.dirname(here))
    if argv and argv[0] == "response":
        ap = argparse.ArgumentParser(
            prog="check-response.py",
            description="Validates a thunder-api body against its schema.")
        ap.add_argument("--schemas", default=os.path.join(default_root,
                                                          "schemas"))
        ap.add_argument("--status", type=int)
        ap.add_argument("schema", help="e.g. api-cluster")
        ap.add_argument("file", help="the body, or - for standard input")
        a = ap.parse_args(argv[1:])
        return check_response(a.schemas, a.schema, a.file, a.status)
    ap = argparse.ArgumentParser(
        prog="check-schemas.py",
        description="Checks schemas/*.schema.json and schemas/openapi.yaml "
        "(or: check-schemas.py response SCHEMA FILE).")
    ap.add_argument("--root", default=default_root)
    a = ap.parse_args(argv)
    return check_repo(a.root)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
