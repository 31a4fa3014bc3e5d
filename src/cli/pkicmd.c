/* thunderctl pki — the fleet's CA and per-host certificates (src/common/pki.c
 * makes them; this file parses the command lines).
 *
 *   thunderctl pki init DIR [--cn NAME] [--days N] [--force]
 *   thunderctl pki issue NAME --ca DIR --out DIR [--dns NAME]... [--ip ADDR]...
 *                        [--role server|client|both] [--days N] [--force]
 *
 * Exit status: 0, 1 on a failure to make or write the files, 2 on a usage
 * error.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cliutil.h"
#include "log.h"
#include "pki.h"
#include "pkicmd.h"

#define PKI_ALT_MAX 32

static void
usage_pki_init(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " pki init DIR [--cn NAME] [--days N] [--force]\n"
          "\n"
          "Makes the fleet's certificate authority in DIR (created 0700):\n"
          "DIR/" PKI_CA_CERT " (give it to every host) and DIR/" PKI_CA_KEY "\n"
          "(keep it on the machine that issues certificates).\n"
          "\n"
          "  --cn NAME     the CA's common name (default \"thunder fleet CA\")\n"
          "  --days N      validity in days (default 3650)\n"
          "  --force       replace existing files\n"
          "  -h, --help    show this help\n");
}

static void
usage_pki_issue(FILE *fp)
{
  fprintf(fp,
          "Usage: " PROG " pki issue NAME --ca DIR --out DIR [--dns NAME]... [--ip ADDR]...\n"
          "                       [--role server|client|both] [--days N] [--force]\n"
          "\n"
          "Issues the certificates of host NAME (its node name: the subject's\n"
          "CN) with the CA in --ca, into --out (created 0700) in the layout\n"
          "QEMU, nbdkit, libnbd and thunder read: " PKI_CA_CERT ",\n"
          PKI_SERVER_CERT ", " PKI_SERVER_KEY ", " PKI_CLIENT_CERT ", " PKI_CLIENT_KEY ".\n"
          "NAME is also a DNS alternative name when it is a DNS name.\n"
          "\n"
          "  --ca DIR          the CA directory (pki init)\n"
          "  --out DIR         where the host's files go\n"
          "  --dns NAME        a DNS name the host is reached by (repeatable)\n"
          "  --ip ADDR         an IPv4/IPv6 address it is reached by (repeatable)\n"
          "  --role ROLE       server, client or both (default both)\n"
          "  --days N          validity in days (default 365)\n"
          "  --force           replace existing files\n"
          "  -h, --help        show this help\n");
}

static int
cmd_pki_init(int argc, char **argv)
{
  enum { OPT_CN = 256, OPT_DAYS, OPT_FORCE };
  static const struct option longopts[] = {
    { "cn", required_argument, NULL, OPT_CN },
    { "days", required_argument, NULL, OPT_DAYS },
    { "force", no_argument, NULL, OPT_FORCE },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *cn = "thunder fleet CA";
  unsigned days = 3650;
  bool force = false;
  int c;

  cli_getopt_start();
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (c) {
    case OPT_CN:
      cn = optarg;
      break;
    case OPT_DAYS:
      if (cli_uint_option("--days", optarg, "days", 1, 36600, &days) < 0)
        return EXIT_USAGE;
      break;
    case OPT_FORCE:
      force = true;
      break;
    case 'h':
      usage_pki_init(stdout);
      return 0;
    default:
      cli_option_error("pki init", argv, c);
      return EXIT_USAGE;
    }
  }
  if (!cli_args_left("pki init", argc, argv, 1, "one DIR"))
    return EXIT_USAGE;
  const char *dir = argv[optind];
  if (pki_init_ca(dir, cn, days, force) == -1)
    return 1;
  printf("made CA '%s' in %s: %s (for every host), %s (keep it here)\n", cn,
         dir, PKI_CA_CERT, PKI_CA_KEY);
  return 0;
}

/* Parses --role. */
static int
parse_role(const char *s, enum pki_role *out)
{
  if (strcmp(s, "server") == 0)
    *out = PKI_ROLE_SERVER;
  else if (strcmp(s, "client") == 0)
    *out = PKI_ROLE_CLIENT;
  else if (strcmp(s, "both") == 0)
    *out = PKI_ROLE_BOTH;
  else {
    fprintf(stderr, PROG ": --role '%s': expected server, client or both\n", s);
    return -1;
  }
  return 0;
}

/* Appends a repeatable option's value to list (at most PKI_ALT_MAX). */
static int
add_alt(const char *opt, const char **list, size_t *n, const char *value)
{
  if (*n == PKI_ALT_MAX) {
    fprintf(stderr, PROG ": %s: at most %d of them\n", opt, PKI_ALT_MAX);
    return -1;
  }
  list[(*n)++] = value;
  return 0;
}

static int
cmd_pki_issue(int argc, char **argv)
{
  enum { OPT_CA = 256, OPT_OUT, OPT_DNS, OPT_IP, OPT_ROLE, OPT_DAYS,
         OPT_FORCE };
  static const struct option longopts[] = {
    { "ca", required_argument, NULL, OPT_CA },
    { "out", required_argument, NULL, OPT_OUT },
    { "dns", required_argument, NULL, OPT_DNS },
    { "ip", required_argument, NULL, OPT_IP },
    { "role", required_argument, NULL, OPT_ROLE },
    { "days", required_argument, NULL, OPT_DAYS },
    { "force", no_argument, NULL, OPT_FORCE },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *dns[PKI_ALT_MAX], *ips[PKI_ALT_MAX];
  const char *ca = NULL, *out = NULL;
  struct pki_host host = { .dns = dns, .ips = ips, .days = 365,
                           .role = PKI_ROLE_BOTH };
  bool force = false;
  int c;

  cli_getopt_start();
  while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (c) {
    case OPT_CA:
      ca = optarg;
      break;
    case OPT_OUT:
      out = optarg;
      break;
    case OPT_DNS:
      if (add_alt("--dns", dns, &host.n_dns, optarg) < 0)
        return EXIT_USAGE;
      break;
    case OPT_IP:
      if (add_alt("--ip", ips, &host.n_ips, optarg) < 0)
        return EXIT_USAGE;
      break;
    case OPT_ROLE:
      if (parse_role(optarg, &host.role) < 0)
        return EXIT_USAGE;
      break;
    case OPT_DAYS:
      if (cli_uint_option("--days", optarg, "days", 1, 36600, &host.days) < 0)
        return EXIT_USAGE;
      break;
    case OPT_FORCE:
      force = true;
      break;
    case 'h':
      usage_pki_issue(stdout);
      return 0;
    default:
      cli_option_error("pki issue", argv, c);
      return EXIT_USAGE;
    }
  }
  if (!cli_args_left("pki issue", argc, argv, 1, "one NAME"))
    return EXIT_USAGE;
  host.name = argv[optind];
  if (ca == NULL || out == NULL) {
    fprintf(stderr, PROG ": pki issue: give the CA directory (--ca DIR) and where the files go (--out DIR)\n");
    return EXIT_USAGE;
  }
  if (pki_issue(ca, out, &host, force) == -1)
    return 1;
  printf("issued %s%s%s certificate%s of '%s' in %s\n",
         host.role & PKI_ROLE_SERVER ? "server" : "",
         host.role == PKI_ROLE_BOTH ? " and " : "",
         host.role & PKI_ROLE_CLIENT ? "client" : "",
         host.role == PKI_ROLE_BOTH ? "s" : "", host.name, out);
  return 0;
}

const struct command pkicmd_commands[] = {
  { "init", "DIR [--cn NAME] [--days N] [--force]",
    "make the fleet's certificate authority", cmd_pki_init, NULL },
  { "issue",
    "NAME --ca DIR --out DIR [--dns NAME]... [--ip ADDR]... [--role server|client|both] [--days N] [--force]",
    "issue a host's server and client certificates", cmd_pki_issue, NULL },
  { NULL, NULL, NULL, NULL, NULL },
};
