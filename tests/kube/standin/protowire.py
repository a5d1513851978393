"""Minimal decoder for Kubernetes protobuf request bodies.

kubectl's typed clients (e.g. `kubectl auth can-i`) send
application/vnd.kubernetes.protobuf. The envelope is the 4 magic bytes
"k8s\\0" followed by a runtime.Unknown message:
  1: typeMeta {1: apiVersion, 2: kind}   2: raw (the object)   3: contentEncoding   4: contentType
Only the kinds the stand-in accepts as protobuf are described below; the
decoded object is returned as the equivalent JSON-shaped dict.
"""

import base64

MAGIC = b"k8s\x00"


class ProtoError(Exception):
    pass


def _varint(buf, i):
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ProtoError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ProtoError("varint too long")


def fields(buf):
    """Yield (field_number, wire_type, value) from one message."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ProtoError("truncated field")
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ProtoError("unsupported wire type %d" % wt)
        yield num, wt, v


# schema: field number -> (json name, type); type is "string", "bool",
# "repeated string", a nested schema dict, or "map" (map<string,string>).
RESOURCE_ATTRS = {1: ("namespace", "string"), 2: ("verb", "string"), 3: ("group", "string"),
                  4: ("version", "string"), 5: ("resource", "string"), 6: ("subresource", "string"),
                  7: ("name", "string")}
NON_RESOURCE_ATTRS = {1: ("path", "string"), 2: ("verb", "string")}
OBJECT_META = {1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
               5: ("uid", "string"), 6: ("resourceVersion", "string"), 7: ("generation", "int"),
               11: ("labels", "map"), 12: ("annotations", "map"), 14: ("finalizers", "repeated string")}
SAR_STATUS = {1: ("allowed", "bool"), 2: ("reason", "string"), 3: ("evaluationError", "string"),
              4: ("denied", "bool")}
SSAR = {1: ("metadata", OBJECT_META),
        2: ("spec", {1: ("resourceAttributes", RESOURCE_ATTRS), 2: ("nonResourceAttributes", NON_RESOURCE_ATTRS)}),
        3: ("status", SAR_STATUS)}
SAR = {1: ("metadata", OBJECT_META),
       2: ("spec", {1: ("resourceAttributes", RESOURCE_ATTRS), 2: ("nonResourceAttributes", NON_RESOURCE_ATTRS),
                    3: ("user", "string"), 4: ("groups", "repeated string"), 6: ("uid", "string")}),
       3: ("status", SAR_STATUS)}
CONFIGMAP = {1: ("metadata", OBJECT_META), 2: ("data", "map"), 3: ("binaryData", "map-bytes"),
             4: ("immutable", "bool")}
SECRET = {1: ("metadata", OBJECT_META), 2: ("data", "map-bytes"), 3: ("type", "string"),
          4: ("stringData", "map"), 5: ("immutable", "bool")}
NAMESPACE = {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("finalizers", "repeated string")})}
SSRR = {1: ("metadata", OBJECT_META), 2: ("spec", {1: ("namespace", "string")})}
SCHEMAS = {("authentication.k8s.io/v1", "SelfSubjectReview"): {1: ("metadata", OBJECT_META)},
           ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): SSRR,
           ("v1", "ConfigMap"): CONFIGMAP, ("v1", "Secret"): SECRET, ("v1", "Namespace"): NAMESPACE,
           ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): SSAR,
           ("authorization.k8s.io/v1", "SubjectAccessReview"): SAR,
           ("authorization.k8s.io/v1", "LocalSubjectAccessReview"): SAR}


def decode_message(buf, schema):
    out = {}
    for num, wt, v in fields(buf):
        if num not in schema:
            continue
        name, typ = schema[num]
        if typ == "string":
            out[name] = bytes(v).decode("utf-8")
        elif typ == "bool":
            out[name] = bool(v)
        elif typ == "repeated string":
            out.setdefault(name, []).append(bytes(v).decode("utf-8"))
        elif typ in ("map", "map-bytes"):
            entry = {n: bytes(x) for n, _, x in fields(v)}
            key = entry.get(1, b"").decode("utf-8")
            val = entry.get(2, b"")
            out.setdefault(name, {})[key] = base64.b64encode(val).decode() if typ == "map-bytes" \
                else val.decode("utf-8")
        elif typ == "int":
            out[name] = v
        else:
            out[name] = decode_message(v, typ)
    # proto2 optional strings are sent empty; JSON omits empty values
    return {k: v for k, v in out.items() if v not in ("", {}, [])}


def decode(body):
    """Return (apiVersion, kind, object dict). Raises ProtoError."""
    if not body.startswith(MAGIC):
        raise ProtoError("missing protobuf magic prefix")
    tm, raw = {}, b""
    for num, _, v in fields(body[4:]):
        if num == 1:
            tm = {n: bytes(x).decode("utf-8") for n, _, x in fields(v)}
        elif num == 2:
            raw = v
        elif num == 3 and v:
            raise ProtoError("unsupported content encoding")
    av, kind = tm.get(1, ""), tm.get(2, "")
    schema = SCHEMAS.get((av, kind))
    if schema is None:
        raise ProtoError("protobuf decoding of %s %s is not implemented by the stand-in" % (av, kind))
    obj = decode_message(raw, schema)
    obj["apiVersion"], obj["kind"] = av, kind
    return av, kind, obj
