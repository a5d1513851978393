#!/usr/bin/env python3
"""Unit tests of the stand-in's patch algorithms and selectors.
Run: python3 tests/kube/test_patch_semantics.py"""
import os
import sys
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "standin"))

from labelsel import (SelectorError, field_match, label_match, parse_field_selector,  # noqa: E402
                      parse_label_selector)
from patch import PatchError, json_patch, merge_patch, strategic_merge  # noqa: E402


def deployment():
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "api", "finalizers": ["a"], "labels": {"app": "api", "tier": "x"}},
            "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "api"}}, "spec": {
                "containers": [
                    {"name": "app", "image": "busybox:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                     "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 90, "name": "m"}],
                     "args": ["x", "y"]},
                    {"name": "side", "image": "envoy"}],
                "volumes": [{"name": "v1", "emptyDir": {}}],
                "tolerations": [{"key": "k1"}]}}}}


class MergePatch(unittest.TestCase):
    def test_rfc7386(self):
        self.assertEqual(merge_patch({"a": "b", "c": {"d": "e", "f": "g"}}, {"a": "z", "c": {"f": None}}),
                         {"a": "z", "c": {"d": "e"}})
        self.assertEqual(merge_patch({"a": [1, 2]}, {"a": [3]}), {"a": [3]})
        self.assertEqual(merge_patch({"a": {"b": 1}}, {"a": "x"}), {"a": "x"})
        self.assertEqual(merge_patch({}, {"a": {"bb": {"ccc": None}}}), {"a": {"bb": {}}})
        self.assertEqual(merge_patch({"e": None}, {"a": 1}), {"e": None, "a": 1})

    def test_does_not_mutate(self):
        orig = {"a": {"b": 1}}
        merge_patch(orig, {"a": {"b": 2}})
        self.assertEqual(orig, {"a": {"b": 1}})


class JsonPatch(unittest.TestCase):
    doc = {"data": {"a": "1", "x/y": "2", "t~": "3"}, "list": [1, 2, 3]}

    def test_ops(self):
        out = json_patch(self.doc, [
            {"op": "add", "path": "/data/b", "value": "n"},
            {"op": "replace", "path": "/data/x~1y", "value": "slash"},
            {"op": "remove", "path": "/data/t~0"},
            {"op": "add", "path": "/list/-", "value": 4},
            {"op": "add", "path": "/list/0", "value": 0},
            {"op": "move", "from": "/data/a", "path": "/moved"},
            {"op": "copy", "from": "/list/1", "path": "/copied"},
            {"op": "test", "path": "/copied", "value": 1},
        ])
        self.assertEqual(out, {"data": {"x/y": "slash", "b": "n"}, "list": [0, 1, 2, 3, 4], "moved": "1", "copied": 1})
        self.assertEqual(self.doc["list"], [1, 2, 3])

    def test_failures(self):
        for ops in ([{"op": "test", "path": "/data/a", "value": "2"}],
                    [{"op": "test", "path": "/list/0", "value": True}],
                    [{"op": "remove", "path": "/data/missing"}],
                    [{"op": "replace", "path": "/nope/x", "value": 1}],
                    [{"op": "add", "path": "/list/9", "value": 1}],
                    [{"op": "add", "path": "/list/01", "value": 1}],
                    [{"op": "frobnicate", "path": "/a"}]):
            with self.assertRaises(PatchError, msg=ops):
                json_patch(self.doc, ops)

    def test_failed_test_message(self):
        with self.assertRaisesRegex(PatchError, "testing value /data/a failed: test failed"):
            json_patch(self.doc, [{"op": "test", "path": "/data/a", "value": "9"}])


class StrategicMerge(unittest.TestCase):
    def c0(self, d):
        return d["spec"]["template"]["spec"]["containers"][0]

    def test_env_by_name_keeps_others(self):
        out = strategic_merge(deployment(), {"spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "B", "value": "two"}, {"name": "C", "value": "3"}]}]}}}}, "Deployment")
        self.assertEqual(self.c0(out)["env"], [{"name": "A", "value": "1"}, {"name": "B", "value": "two"},
                                               {"name": "C", "value": "3"}])
        self.assertEqual(self.c0(out)["image"], "busybox:1")
        self.assertEqual(out["spec"]["template"]["spec"]["containers"][1], {"name": "side", "image": "envoy"})

    def test_ports_by_container_port_and_atomic_lists(self):
        out = strategic_merge(deployment(), {"spec": {"template": {"spec": {
            "containers": [{"name": "app", "ports": [{"containerPort": 90, "name": "metrics"}], "args": ["z"]}],
            "tolerations": [{"key": "k2"}]}}}}, "Deployment")
        self.assertEqual(self.c0(out)["ports"], [{"containerPort": 80, "name": "http"},
                                                 {"containerPort": 90, "name": "metrics"}])
        self.assertEqual(self.c0(out)["args"], ["z"])  # no merge strategy: replaced
        self.assertEqual(out["spec"]["template"]["spec"]["tolerations"], [{"key": "k2"}])

    def test_delete_directives(self):
        out = strategic_merge(deployment(), {"spec": {"template": {"spec": {
            "containers": [{"name": "side", "$patch": "delete"},
                           {"name": "app", "env": [{"name": "A", "$patch": "delete"}]}],
            "volumes": [{"$patch": "replace"}, {"name": "v2", "secret": {"secretName": "s"}}]}}}}, "Deployment")
        spec = out["spec"]["template"]["spec"]
        self.assertEqual([c["name"] for c in spec["containers"]], ["app"])
        self.assertEqual(spec["containers"][0]["env"], [{"name": "B", "value": "2"}])
        self.assertEqual(spec["volumes"], [{"name": "v2", "secret": {"secretName": "s"}}])

    def test_map_directives(self):
        out = strategic_merge(deployment(), {"metadata": {"labels": {"$patch": "replace", "only": "this"}}}, "Deployment")
        self.assertEqual(out["metadata"]["labels"], {"only": "this"})
        out = strategic_merge(deployment(), {"spec": {"template": {"metadata": {"$patch": "delete"}}}}, "Deployment")
        self.assertNotIn("metadata", out["spec"]["template"])
        out = strategic_merge({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}},
                              {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}, "Deployment")
        self.assertEqual(out["spec"]["strategy"], {"type": "Recreate"})

    def test_null_deletes_and_new_list(self):
        out = strategic_merge(deployment(), {"metadata": {"labels": {"tier": None}}, "spec": {"replicas": 5}},
                              "Deployment")
        self.assertEqual(out["metadata"]["labels"], {"app": "api"})
        self.assertEqual(out["spec"]["replicas"], 5)
        out = strategic_merge({"spec": {}}, {"spec": {"template": {"spec": {"containers": [{"name": "n", "image": "i"}]}}}},
                              "Deployment")
        self.assertEqual(out["spec"]["template"]["spec"]["containers"], [{"name": "n", "image": "i"}])

    def test_set_element_order_and_primitive_lists(self):
        out = strategic_merge(deployment(), {"metadata": {"finalizers": ["b"],
                                                          "$deleteFromPrimitiveList/finalizers": ["a"]}}, "Deployment")
        self.assertEqual(out["metadata"]["finalizers"], ["b"])
        out = strategic_merge(deployment(), {"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "side"}, {"name": "app"}],
            "containers": [{"name": "app", "image": "busybox:2"}]}}}}, "Deployment")
        cs = out["spec"]["template"]["spec"]["containers"]
        self.assertEqual([(c["name"], c["image"]) for c in cs], [("side", "envoy"), ("app", "busybox:2")])

    def test_service_ports_by_port(self):
        svc = {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}}
        out = strategic_merge(svc, {"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}, "Service")
        self.assertEqual(out["spec"]["ports"], [{"port": 80, "name": "http"},
                                                {"port": 443, "name": "https", "targetPort": 8443}])

    def test_missing_merge_key_is_an_error(self):
        with self.assertRaises(PatchError):
            strategic_merge(deployment(), {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}},
                            "Deployment")


class Selectors(unittest.TestCase):
    def m(self, sel, labels):
        return label_match(parse_label_selector(sel), labels)

    def test_equality_and_sets(self):
        L = {"app": "api", "tier": "backend"}
        self.assertTrue(self.m("app=api", L))
        self.assertTrue(self.m("app==api,tier!=frontend", L))
        self.assertFalse(self.m("app!=api", L))
        self.assertTrue(self.m("app in (api, web)", L))
        self.assertFalse(self.m("app notin (api)", L))
        self.assertTrue(self.m("env notin (prod)", L))
        self.assertTrue(self.m("tier", L))
        self.assertFalse(self.m("!tier", L))
        self.assertTrue(self.m("!env", L))
        self.assertTrue(self.m("", L))
        self.assertTrue(self.m("app in (api,web),!env,tier", L))
        self.assertFalse(self.m("app=api,env", L))

    def test_invalid(self):
        for bad in ("app=", "a b", "app in (x", "=x", "app=a b", ","):
            if bad == "app=":
                self.assertTrue(self.m(bad, {"app": ""}))  # empty value is valid
                continue
            with self.assertRaises(SelectorError, msg=bad):
                parse_label_selector(bad)

    def test_field_selectors(self):
        pod = {"metadata": {"name": "p", "namespace": "n"}, "status": {"phase": "Running"}}
        sup = ["metadata.name", "metadata.namespace", "status.phase"]
        self.assertTrue(field_match(parse_field_selector("status.phase=Running,metadata.name==p", sup), pod))
        self.assertFalse(field_match(parse_field_selector("status.phase!=Running", sup), pod))
        with self.assertRaisesRegex(SelectorError, "field label not supported: spec.nodeName"):
            parse_field_selector("spec.nodeName=x", sup)


if __name__ == "__main__":
    unittest.main(verbosity=1)
