"""Object store: the stand-in's whole cluster state, guarded by one lock.

Every change is also appended to a bounded event history (for watch);
waiters are woken through the condition variable `cond`.
"""
import copy
import threading

HISTORY = 5000


class Store:
    def __init__(self):
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.objects = {}  # (plural, namespace or "", name) -> object (with kind/apiVersion)
        self.rv = 1
        self.history = []  # (rv:int, type, plural, object)
        self.oldest_rv = 1  # events after this rv are all in history

    def next_rv(self):
        self.rv += 1
        return str(self.rv)

    def current_rv(self):
        return str(self.rv)

    def get_raw(self, plural, ns, name):
        return self.objects.get((plural, ns or "", name))

    def get(self, plural, ns, name):
        o = self.get_raw(plural, ns, name)
        return copy.deepcopy(o) if o is not None else None

    def list_raw(self, plural, ns=None):
        out = [o for (p, n, _), o in self.objects.items() if p == plural and (ns is None or n == ns)]
        out.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return out

    def _record(self, etype, plural, obj):
        with self.lock:
            self._record_locked(etype, plural, obj)

    def _record_locked(self, etype, plural, obj):
        self.history.append((int(obj["metadata"]["resourceVersion"]), etype, plural, copy.deepcopy(obj)))
        if len(self.history) > HISTORY:
            dropped = self.history[: len(self.history) - HISTORY]
            self.history = self.history[len(dropped):]
            self.oldest_rv = dropped[-1][0]
        self.cond.notify_all()

    def put(self, plural, ns, name, obj):
        """Store obj, whose metadata.resourceVersion must already be a fresh next_rv()."""
        key = (plural, ns or "", name)
        etype = "MODIFIED" if key in self.objects else "ADDED"
        self.objects[key] = obj
        self._record(etype, plural, obj)

    def delete(self, plural, ns, name):
        obj = self.objects.pop((plural, ns or "", name), None)
        if obj is not None:
            gone = copy.deepcopy(obj)
            gone["metadata"]["resourceVersion"] = self.next_rv()
            self._record("DELETED", plural, gone)
        return obj

    def delete_namespace_contents(self, ns):
        for key in [k for k in self.objects if k[1] == ns]:
            self.delete(key[0], key[1], key[2])

    def events_after(self, rv):
        return [e for e in self.history if e[0] > rv]
