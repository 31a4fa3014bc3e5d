/* thunder — the bodies of thunderd's control requests: PUT
 * /v1/images/NAME (attach) and PUT /v1/vms/NAME, each a parsed JSON
 * object (httpsvc_body_json) checked field by field into a plain struct,
 * or one message naming the field that the route answers with 400.
 * Unknown fields are refused.  Pure: no HTTP, no node state; the fuzz
 * target fuzz-bodies runs these on arbitrary bytes. */
#include "ctlbody.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "digest.h"
#include "jsonutil.h"
#include "manifest.h"

static const char *const attach_fields[] = { "version", "upstreams", NULL };
static const char *const vm_fields[] = {
  "image", "vcpus", "memory_mib", "disk_gib", "accel", NULL,
};

/* Checks one upstream URI; field names it ("upstreams[2]"). */
static int
check_upstream(const char *field, const char *uri, size_t len, char *err,
               size_t errlen)
{
  static const char form[] =
      "expected nbd://HOST:PORT/NAME or nbd+unix:///NAME?socket=PATH";
  char s[80];

  if (len > CONTROL_URI_MAX) {
    snprintf(err, errlen, "field '%s': %zu bytes; at most %d", field, len,
             CONTROL_URI_MAX);
    return -1;
  }
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)uri[i];
    if (c <= 0x20 || c >= 0x7f) {
      snprintf(err, errlen, "field '%s': byte 0x%02x at offset %zu; an NBD URI is printable ASCII without spaces (percent-encode the rest)",
               field, c, i);
      return -1;
    }
  }
  if (strncmp(uri, "nbd://", 6) == 0) {
    if (uri[6] == '\0' || uri[6] == '/' || uri[6] == '?') {
      snprintf(err, errlen, "field '%s': '%s' has no host; %s", field,
               jsonutil_shown(uri, len, s, sizeof s), form);
      return -1;
    }
    return 0;
  }
  if (strncmp(uri, "nbd+unix://", 11) == 0) {
    const char *q = strchr(uri, '?');
    if (q == NULL || (strncmp(q + 1, "socket=", 7) != 0 &&
                      strstr(q, "&socket=") == NULL)) {
      snprintf(err, errlen, "field '%s': '%s' has no socket=PATH; %s", field,
               jsonutil_shown(uri, len, s, sizeof s), form);
      return -1;
    }
    return 0;
  }
  snprintf(err, errlen, "field '%s': '%s' is not an NBD URI; %s", field,
           jsonutil_shown(uri, len, s, sizeof s), form);
  return -1;
}

int
ctlbody_attach(struct json_object *root, const char *name,
               const char *ups[CONTROL_UPSTREAMS_MAX],
               struct control_attach *out, char *err, size_t errlen)
{
  struct json_object *v, *a;

  if (jsonutil_known_keys(root, "", attach_fields,
                          "expected version and upstreams", err, errlen) < 0)
    return -1;

  if (!json_object_object_get_ex(root, "version", &v)) {
    snprintf(err, errlen, "field 'version': missing; expected the image's version (64 lowercase hex digits)");
    return -1;
  }
  if (!json_object_is_type(v, json_type_string)) {
    snprintf(err, errlen, "field 'version': expected a string of 64 lowercase hex digits, not %s",
             json_type_to_name(json_object_get_type(v)));
    return -1;
  }
  const char *version = json_object_get_string(v);
  size_t vlen = (size_t)json_object_get_string_len(v);
  bool hex = vlen == DIGEST_HEX_LEN;
  for (size_t i = 0; hex && i < vlen; i++)
    hex = (version[i] >= '0' && version[i] <= '9') ||
          (version[i] >= 'a' && version[i] <= 'f');
  if (!hex) {
    snprintf(err, errlen, "field 'version': expected 64 lowercase hex digits (the manifest's SHA-256), got %zu characters",
             vlen);
    return -1;
  }

  if (!json_object_object_get_ex(root, "upstreams", &a)) {
    snprintf(err, errlen, "field 'upstreams': missing; expected 1 to %d NBD URIs, parent first, origin last",
             CONTROL_UPSTREAMS_MAX);
    return -1;
  }
  if (!json_object_is_type(a, json_type_array)) {
    snprintf(err, errlen, "field 'upstreams': expected an array of NBD URIs, not %s",
             json_type_to_name(json_object_get_type(a)));
    return -1;
  }
  size_t n = json_object_array_length(a);
  if (n == 0) {
    snprintf(err, errlen, "field 'upstreams': empty; expected 1 to %d NBD URIs, parent first, origin last",
             CONTROL_UPSTREAMS_MAX);
    return -1;
  }
  if (n > CONTROL_UPSTREAMS_MAX) {
    snprintf(err, errlen, "field 'upstreams': %zu entries; at most %d",
             n, CONTROL_UPSTREAMS_MAX);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    struct json_object *u = json_object_array_get_idx(a, i);
    char field[32];
    snprintf(field, sizeof field, "upstreams[%zu]", i);
    if (!json_object_is_type(u, json_type_string)) {
      snprintf(err, errlen, "field '%s': expected a string (an NBD URI), not %s",
               field, json_type_to_name(json_object_get_type(u)));
      return -1;
    }
    const char *uri = json_object_get_string(u);
    if (check_upstream(field, uri, (size_t)json_object_get_string_len(u),
                       err, errlen) < 0)
      return -1;
    for (size_t j = 0; j < i; j++) {
      if (strcmp(ups[j], uri) == 0) {
        snprintf(err, errlen, "field '%s': same as upstreams[%zu]", field, j);
        return -1;
      }
    }
    ups[i] = uri;
  }

  out->name = name;
  out->version = version;
  out->upstreams = ups;
  out->nupstreams = n;
  return 0;
}

int
ctlbody_vm(struct json_object *root, const char *name, struct control_vm *out,
           char *err, size_t errlen)
{
  struct json_object *v;
  char s[80];

  if (jsonutil_known_keys(root, "", vm_fields,
                          "expected image, vcpus, memory_mib, disk_gib and accel",
                          err, errlen) < 0)
    return -1;
  memset(out, 0, sizeof *out);
  out->name = name;
  if (!json_object_object_get_ex(root, "image", &v)) {
    snprintf(err, errlen, "field 'image': missing; expected the name of an image attached on this node");
    return -1;
  }
  if (!json_object_is_type(v, json_type_string)) {
    snprintf(err, errlen, "field 'image': expected a string (an image name), not %s",
             json_type_to_name(json_object_get_type(v)));
    return -1;
  }
  out->image = json_object_get_string(v);
  size_t ilen = (size_t)json_object_get_string_len(v);
  if (ilen != strlen(out->image) || !manifest_name_valid(out->image)) {
    snprintf(err, errlen, "field 'image': '%s' is not a valid image name: use " MANIFEST_NAME_RULE,
             jsonutil_shown(out->image, ilen, s, sizeof s));
    return -1;
  }
  uint64_t vcpus, memory, disk = 0;
  if (jsonutil_get_uint(root, "", "vcpus", true, 1, CONTROL_VCPUS_MAX, &vcpus,
                        err, errlen) < 0 ||
      jsonutil_get_uint(root, "", "memory_mib", true, CONTROL_MEMORY_MIN_MIB,
                        CONTROL_MEMORY_MAX_MIB, &memory, err, errlen) < 0 ||
      jsonutil_get_uint(root, "", "disk_gib", false, 1, CONTROL_DISK_MAX_GIB,
                        &disk, err, errlen) < 0)
    return -1;
  out->vcpus = (unsigned)vcpus;
  out->memory_mib = (unsigned)memory;
  out->disk_gib = (unsigned)disk;

  out->accel = CONTROL_ACCEL_AUTO;
  if (json_object_object_get_ex(root, "accel", &v)) {
    if (!json_object_is_type(v, json_type_string)) {
      snprintf(err, errlen, "field 'accel': expected \"auto\", \"kvm\" or \"tcg\", not %s",
               json_type_to_name(json_object_get_type(v)));
      return -1;
    }
    const char *a = json_object_get_string(v);
    size_t alen = (size_t)json_object_get_string_len(v);
    if (alen == 4 && strcmp(a, "auto") == 0)
      out->accel = CONTROL_ACCEL_AUTO;
    else if (alen == 3 && strcmp(a, "kvm") == 0)
      out->accel = CONTROL_ACCEL_KVM;
    else if (alen == 3 && strcmp(a, "tcg") == 0)
      out->accel = CONTROL_ACCEL_TCG;
    else {
      snprintf(err, errlen, "field 'accel': '%s' is not one of auto, kvm, tcg",
               jsonutil_shown(a, alen, s, sizeof s));
      return -1;
    }
  }
  return 0;
}
