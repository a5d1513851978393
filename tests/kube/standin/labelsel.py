"""Label and field selectors (Kubernetes syntax)."""
import re


class SelectorError(Exception):
    pass


_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VAL = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"


def _split_top(s):
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise SelectorError("unbalanced parenthesis in selector %r" % s)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise SelectorError("unbalanced parenthesis in selector %r" % s)
    parts.append(cur)
    return [p.strip() for p in parts]


def _check_key(k):
    if not re.fullmatch(_KEY, k) or len(k.split("/")[-1]) > 63:
        raise SelectorError("invalid label key %r" % k)


def _check_val(v):
    if len(v) > 63 or not re.fullmatch(_VAL, v):
        raise SelectorError("invalid label value: %r" % v)


def parse_label_selector(s):
    """Return a list of requirements (key, op, values)."""
    reqs = []
    if s is None or s.strip() == "":
        return reqs
    for part in _split_top(s):
        if part == "":
            raise SelectorError("found '', expected: identifier")
        m = re.fullmatch(r"(\S+?)\s+(in|notin)\s*\((.*)\)", part)
        if m:
            key, op, vals = m.group(1), m.group(2), [v.strip() for v in m.group(3).split(",")]
            _check_key(key)
            for v in vals:
                _check_val(v)
            reqs.append((key, op, set(vals)))
            continue
        if part.startswith("!"):
            key = part[1:].strip()
            _check_key(key)
            reqs.append((key, "!", None))
            continue
        m = re.fullmatch(r"([^=!<>\s]+)\s*(==|=|!=|<|>)\s*(.*)", part)
        if m:
            key, op, val = m.group(1), m.group(2), m.group(3).strip()
            _check_key(key)
            if op in ("<", ">"):
                if not re.fullmatch(r"-?\d+", val):
                    raise SelectorError("for 'Gt', 'Lt' operators, the value must be an integer")
                reqs.append((key, op, int(val)))
                continue
            _check_val(val)
            reqs.append((key, "!=" if op == "!=" else "=", val))
            continue
        if re.fullmatch(r"\S+", part):
            _check_key(part)
            reqs.append((part, "exists", None))
            continue
        raise SelectorError("unable to parse requirement: %r" % part)
    return reqs


def label_match(reqs, labels):
    labels = labels or {}
    for key, op, val in reqs:
        has = key in labels
        cur = labels.get(key)
        if op == "=":
            ok = has and cur == val
        elif op == "!=":
            ok = (not has) or cur != val
        elif op == "in":
            ok = has and cur in val
        elif op == "notin":
            ok = (not has) or cur not in val
        elif op == "exists":
            ok = has
        elif op == "!":
            ok = not has
        elif op in ("<", ">"):
            try:
                n = int(cur)
            except (TypeError, ValueError):
                ok = False
            else:
                ok = n < val if op == "<" else n > val
        else:
            ok = False
        if not ok:
            return False
    return True


def parse_field_selector(s, supported):
    """Return list of (field, op, value); op in '=', '!='."""
    reqs = []
    if s is None or s.strip() == "":
        return reqs
    for part in _split_top(s):
        m = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(.*)", part)
        if not m:
            raise SelectorError("invalid selector: '%s'; can't understand '%s'" % (s, part))
        field, op, val = m.group(1), m.group(2), m.group(3)
        if field not in supported:
            raise SelectorError('field label not supported: %s' % field)
        reqs.append((field, "!=" if op == "!=" else "=", val))
    return reqs


def field_value(obj, field):
    cur = obj
    for p in field.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def field_match(reqs, obj):
    for field, op, val in reqs:
        cur = field_value(obj, field)
        if (cur == val) != (op == "="):
            return False
    return True
