/* thunder — the check of a TLS client's certificate; see tlspeer.h. */
#include "tlspeer.h"

#include <gnutls/x509.h>
#include <stdio.h>
#include <string.h>

int
tlspeer_check_client(gnutls_session_t session, char *cn, size_t cnlen,
                     char *why, size_t whylen)
{
  unsigned n = 0;
  const gnutls_datum_t *certs = gnutls_certificate_get_peers(session, &n);
  if (certs == NULL || n == 0)
    return 0;
  gnutls_typed_vdata_st purpose = {
    .type = GNUTLS_DT_KEY_PURPOSE_OID,
    .data = (void *)GNUTLS_KP_TLS_WWW_CLIENT,
  };
  unsigned status = 0;
  int r = gnutls_certificate_verify_peers(session, &purpose, 1, &status);
  if (r < 0 || status != 0) {
    gnutls_datum_t text = { NULL, 0 };
    if (r >= 0)
      gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509,
                                                   &text, 0);
    snprintf(why, whylen, "%s",
             r < 0 ? gnutls_strerror(r)
                   : text.data ? (const char *)text.data : "not valid");
    gnutls_free(text.data);
    return -1;
  }
  gnutls_x509_crt_t crt;
  size_t len = cnlen;
  if (gnutls_x509_crt_init(&crt) < 0)
    goto no_name;
  r = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
  if (r >= 0)
    r = gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0,
                                      cn, &len);
  gnutls_x509_crt_deinit(crt);
  if (r < 0 || len == 0 || strlen(cn) != len)
    goto no_name;
  return 1;
no_name:
  cn[0] = '\0';
  snprintf(why, whylen, "no usable common name (CN) of at most %zu bytes",
           cnlen - 1);
  return -1;
}
