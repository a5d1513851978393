/* YAML -> cJSON via libyaml: the reader behind iac.yaml and iac.manifest (no Lua here). */
#ifndef RBL_YAML_H
#define RBL_YAML_H

#include <stddef.h>
#include <cjson/cJSON.h>
/* This header shadows libyaml's <yaml.h> on the src/ include path: pull the library's
 * header in from the next directory so code that includes either gets both. */
#include_next <yaml.h>

/* Most nodes one parse may produce, aliases expanded (billion-laughs guard). */
#define RBL_YAML_MAX_NODES 1000000L
/* Deepest nesting of sequences and mappings accepted. */
#define RBL_YAML_MAX_DEPTH 256

/* Parses every document of buf[0..len) into a cJSON array (one element per document;
 * an empty stream gives []). Plain scalars resolve like YAML 1.2 core: null, ~ and empty
 * are null; true/false (any case form libyaml's core schema allows: true, True, TRUE)
 * are booleans; decimal, 0x and 0o integers and decimal floats are numbers; everything
 * else, and every quoted or block scalar, is a string. Anchors and aliases are expanded,
 * "<<" merge keys are honoured. Returns NULL with "line L, column C: why" in err on a
 * syntax error, an unknown alias, a non-scalar key, nesting deeper than
 * RBL_YAML_MAX_DEPTH or more than RBL_YAML_MAX_NODES nodes. The caller frees the result
 * with cJSON_Delete. */
cJSON *rbl_yaml_parse(const char *buf, size_t len, char *err, size_t errlen);

#endif
