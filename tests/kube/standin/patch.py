"""Patch algorithms used by the Kubernetes API stand-in.

- merge_patch:      RFC 7386 JSON merge patch
- json_patch:       RFC 6902 JSON patch (add/remove/replace/move/copy/test)
- strategic_merge:  Kubernetes strategic merge patch (merge keys, $patch,
                    $setElementOrder, $deleteFromPrimitiveList, $retainKeys)
"""
import copy


class PatchError(Exception):
    """Patch could not be applied (maps to 422 on the server)."""


class PatchFormatError(Exception):
    """Patch document is malformed (maps to 400 on the server)."""


# --------------------------------------------------------------- RFC 7386

def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


# --------------------------------------------------------------- RFC 6902

def _unescape(tok):
    return tok.replace("~1", "/").replace("~0", "~")


def _split_pointer(ptr):
    if not isinstance(ptr, str):
        raise PatchFormatError("path must be a string")
    if ptr == "":
        return []
    if not ptr.startswith("/"):
        raise PatchError("invalid JSON pointer %r" % ptr)
    return [_unescape(t) for t in ptr[1:].split("/")]


def _list_index(container, tok, allow_end):
    if tok == "-" and allow_end:
        return len(container)
    if not tok.isdigit() or (len(tok) > 1 and tok[0] == "0"):
        raise PatchError("invalid array index %r" % tok)
    i = int(tok)
    limit = len(container) if allow_end else len(container) - 1
    if i > limit:
        raise PatchError("array index %d out of bounds" % i)
    return i


def _resolve_parent(doc, toks, ptr):
    cur = doc
    for tok in toks[:-1]:
        if isinstance(cur, dict):
            if tok not in cur:
                raise PatchError("doc is missing path: %s" % ptr)
            cur = cur[tok]
        elif isinstance(cur, list):
            cur = cur[_list_index(cur, tok, False)]
        else:
            raise PatchError("doc is missing path: %s" % ptr)
    return cur


def _get(doc, ptr):
    toks = _split_pointer(ptr)
    if not toks:
        return doc
    parent = _resolve_parent(doc, toks, ptr)
    last = toks[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError("doc is missing path: %s" % ptr)
        return parent[last]
    if isinstance(parent, list):
        return parent[_list_index(parent, last, False)]
    raise PatchError("doc is missing path: %s" % ptr)


def _add(doc, ptr, value):
    toks = _split_pointer(ptr)
    if not toks:
        return value
    parent = _resolve_parent(doc, toks, ptr)
    last = toks[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_list_index(parent, last, True), value)
    else:
        raise PatchError("doc is missing path: %s" % ptr)
    return doc


def _remove(doc, ptr):
    toks = _split_pointer(ptr)
    if not toks:
        raise PatchError("cannot remove the document root")
    parent = _resolve_parent(doc, toks, ptr)
    last = toks[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError("unable to remove nonexistent key: %s: missing value" % last)
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_list_index(parent, last, False))
    raise PatchError("doc is missing path: %s" % ptr)


def json_equal(a, b):
    """Equality of JSON values (true != 1, 1 == 1.0)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def json_patch(target, ops):
    if not isinstance(ops, list):
        raise PatchFormatError("json patch must be a JSON array of operations")
    doc = copy.deepcopy(target)
    for op in ops:
        if not isinstance(op, dict) or "op" not in op:
            raise PatchFormatError("invalid json patch operation %r" % (op,))
        kind, path = op["op"], op.get("path")
        if path is None:
            raise PatchError("operation %s is missing path" % kind)
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError("operation %s is missing value" % kind)
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # must exist
            toks = _split_pointer(path)
            if not toks:
                doc = copy.deepcopy(op["value"])
            else:
                parent = _resolve_parent(doc, toks, path)
                if isinstance(parent, list):
                    parent[_list_index(parent, toks[-1], False)] = copy.deepcopy(op["value"])
                else:
                    parent[toks[-1]] = copy.deepcopy(op["value"])
        elif kind in ("move", "copy"):
            frm = op.get("from")
            if frm is None:
                raise PatchError("operation %s is missing from" % kind)
            if kind == "move":
                if path.startswith(frm + "/"):
                    raise PatchError("cannot move a value into one of its children")
                value = _remove(doc, frm)
            else:
                value = copy.deepcopy(_get(doc, frm))
            doc = _add(doc, path, value)
        elif kind == "test":
            try:
                cur = _get(doc, path)
            except PatchError:
                raise PatchError("testing value %s failed: test failed" % path)
            if not json_equal(cur, op["value"]):
                raise PatchError("testing value %s failed: test failed" % path)
        else:
            raise PatchError("unexpected kind of operation %r" % kind)
    return doc


# ----------------------------------------------------- strategic merge patch
# Merge keys follow the Go struct tags of the built-in types
# (patchStrategy:"merge" patchMergeKey:"...").

CONTAINER_LISTS = ("containers", "initContainers", "ephemeralContainers")


def merge_key_for(kind, path):
    """Return (strategy, key) for the list found at path (tuple of field
    names, list indices omitted). strategy is 'merge' or None (atomic)."""
    if not path:
        return None, None
    last = path[-1]
    parent = path[-2] if len(path) > 1 else None
    if last in CONTAINER_LISTS:
        return "merge", "name"
    if last == "ports":
        if parent in CONTAINER_LISTS:
            return "merge", "containerPort"
        if kind == "Service" and parent == "spec":
            return "merge", "port"
        return None, None
    if last in ("env", "volumes", "imagePullSecrets") or (last == "resourceClaims" and parent == "spec"):
        return "merge", "name"
    if last == "volumeMounts":
        return "merge", "mountPath"
    if last == "volumeDevices":
        return "merge", "devicePath"
    if last == "hostAliases":
        return "merge", "ip"
    if last == "ownerReferences" and parent == "metadata":
        return "merge", "uid"
    if last == "finalizers" and parent == "metadata":
        return "merge", None  # primitive list, union
    if last == "conditions" and parent == "status":
        return "merge", "type"
    if last == "topologySpreadConstraints":
        return "merge", "topologyKey"
    if last == "secrets" and kind == "ServiceAccount":
        return "merge", "name"
    return None, None


DIRECTIVE = "$patch"
SET_ORDER = "$setElementOrder/"
DEL_PRIM = "$deleteFromPrimitiveList/"
RETAIN = "$retainKeys"


def strategic_merge(target, patch, kind):
    if not isinstance(patch, dict):
        raise PatchFormatError("strategic merge patch must be a JSON object")
    out = _smp_map(copy.deepcopy(target) if isinstance(target, dict) else {}, patch, kind, ())
    if out is _DELETED:
        return {}
    return out


_DELETED = object()


def _strip(m):
    return {k: v for k, v in m.items() if not (k == DIRECTIVE or k == RETAIN or k.startswith(SET_ORDER) or k.startswith(DEL_PRIM))}


def _clean(value):
    """Remove directives and nulls from a value that is inserted as-is."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in _strip(value).items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value if not (isinstance(v, dict) and v.get(DIRECTIVE) == "delete")]
    return value


def _smp_map(orig, patch, kind, path):
    directive = patch.get(DIRECTIVE)
    if directive == "delete":
        return _DELETED
    if directive == "replace":
        return _clean(patch)
    if directive is not None and directive != "merge":  # "merge" is the default, spelled out
        raise PatchError("unknown patch type: %s in map: %r" % (directive, patch))
    result = orig
    retain = patch.get(RETAIN)
    if retain is not None:
        if not isinstance(retain, list):
            raise PatchError("$retainKeys must be a list")
        result = {k: v for k, v in result.items() if k in retain}
    # deletions from primitive lists
    for k, v in patch.items():
        if k.startswith(DEL_PRIM):
            field = k[len(DEL_PRIM):]
            if isinstance(result.get(field), list) and isinstance(v, list):
                result[field] = [x for x in result[field] if x not in v]
    for k, v in patch.items():
        if k == DIRECTIVE or k == RETAIN or k.startswith(SET_ORDER) or k.startswith(DEL_PRIM):
            continue
        sub = path + (k,)
        if v is None:
            result.pop(k, None)
        elif isinstance(v, dict):
            cur = result.get(k)
            merged = _smp_map(cur if isinstance(cur, dict) else {}, v, kind, sub)
            if merged is _DELETED:
                result.pop(k, None)
            else:
                result[k] = merged
        elif isinstance(v, list):
            result[k] = _smp_list(result.get(k), v, kind, sub)
        else:
            result[k] = v
    for k, order in patch.items():
        if k.startswith(SET_ORDER):
            field = k[len(SET_ORDER):]
            if isinstance(result.get(field), list) and isinstance(order, list):
                result[field] = _apply_order(result[field], order, kind, path + (field,))
    return result


def _apply_order(items, order, kind, path):
    _, key = merge_key_for(kind, path)

    def ident(x):
        if key is not None and isinstance(x, dict):
            return x.get(key)
        return x

    order_ids = [o.get(key) if key is not None and isinstance(o, dict) else o for o in order]
    pos = {v: i for i, v in enumerate(order_ids) if isinstance(v, (str, int, float, bool))}
    ordered = [x for x in items if ident(x) in pos]
    ordered.sort(key=lambda x: pos[ident(x)])
    rest = [x for x in items if ident(x) not in pos]
    return ordered + rest


def _smp_list(orig, patch, kind, path):
    strategy, key = merge_key_for(kind, path)
    # a list item {"$patch": "replace"} replaces the whole list
    if any(isinstance(x, dict) and x.get(DIRECTIVE) == "replace" and len(x) == 1 for x in patch):
        return _clean([x for x in patch if not (isinstance(x, dict) and x.get(DIRECTIVE) == "replace" and len(x) == 1)])
    if strategy != "merge" or not isinstance(orig, list):
        if strategy == "merge" and orig is None:
            return _clean(patch)
        return _clean(patch)
    result = copy.deepcopy(orig)
    if key is None:
        # merge list of primitives: union, keep order
        for x in patch:
            if isinstance(x, dict) and x.get(DIRECTIVE) == "delete":
                continue
            if x not in result:
                result.append(x)
        return result
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError("list %s items must be objects with merge key %s" % (".".join(path), key))
        if DIRECTIVE in item and item[DIRECTIVE] == "delete":
            if key not in item:
                raise PatchError("delete directive in list %s is missing merge key %s" % (".".join(path), key))
            result = [x for x in result if not (isinstance(x, dict) and x.get(key) == item[key])]
            continue
        if key not in item:
            raise PatchError("map: %r does not contain declared merge key: %s" % (item, key))
        idx = next((i for i, x in enumerate(result) if isinstance(x, dict) and x.get(key) == item[key]), None)
        if idx is None:
            result.append(_clean(item))
        else:
            merged = _smp_map(result[idx], item, kind, path)
            if merged is _DELETED:
                result.pop(idx)
            else:
                result[idx] = merged
    return result
