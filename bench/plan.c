/* thunder — the relay tree planner (src/api/tree.c) on the command line,
 * for the provisioning benchmark (bench/provision.sh, issue 6).
 *
 *   plan [--origin-mbit M] [--node-mbit M] [--rtt-ms MS] [--local-s S]
 *        [--working-set BYTES] [--block-size BYTES] [--read-size BYTES]
 *        [--burst-size BYTES] [--origin-cap C] [--origin-copies X] [--max-upstreams U]
 *        [--fanout K] < NODES
 *
 * NODES: one node a line, "ID [RACK [ZONE]]", separated by blanks; empty
 * lines and lines starting with '#' are skipped.  IDs are 1..64 bytes of
 * [A-Za-z0-9._-], unique.  The planner's parameters default to
 * tree_params_init()'s; the benchmark passes its link rates, W, the trace's
 * read sizes and T_local.
 *
 * Output, one line per node in input order:
 *   ID DEPTH PARENT UPSTREAM...
 * PARENT is a node id or "origin"; the upstreams are the ordered list the
 * node is attached with (parent, grandparent, ..., "origin").  Then one
 * line "# c=C k=K depth=D interior=I predicted=S t_lb=S" with the model's
 * figures for the plan.
 *
 * Exit status: 0 planned, 1 the planner refused (the message names the
 * node or field), 2 bad usage or bad input (the message names the line).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <getopt.h>

#include "tree.h"

#define LINE_MAX_BYTES 512

static void
usage_exit(void)
{
  fprintf(stderr,
          "usage: plan [--origin-mbit M] [--node-mbit M] [--rtt-ms MS] "
          "[--local-s S] [--working-set BYTES] [--block-size BYTES] "
          "[--read-size BYTES] [--burst-size BYTES] [--origin-cap C] [--origin-copies X] "
          "[--max-upstreams U] [--fanout K] < NODES\n");
  exit(2);
}

/* A finite, non-negative decimal number (no sign, hex, exponent or nan). */
static double
parse_num(const char *opt, const char *s, double min, double max)
{
  char *end;
  if (s[0] == '\0' || strspn(s, "0123456789.") != strlen(s)) {
    fprintf(stderr, "plan: --%s '%s' is not a plain decimal number\n", opt, s);
    exit(2);
  }
  errno = 0;
  double v = strtod(s, &end);
  if (errno != 0 || *end != '\0' || v < min || v > max) {
    fprintf(stderr, "plan: --%s '%s' is out of range %g..%g\n", opt, s, min,
            max);
    exit(2);
  }
  return v;
}

static bool
valid_label(const char *s)
{
  size_t n = strlen(s);
  return n >= 1 && n <= TREE_ID_MAX &&
         strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                   "0123456789._-") == n;
}

struct input {
  struct tree_node *nodes;
  char **strings;          /* every strdup'ed field, freed at the end */
  size_t n, cap, nstr, strcap;
};

static char *
keep(struct input *in, const char *s)
{
  if (in->nstr == in->strcap) {
    size_t c = in->strcap ? in->strcap * 2 : 64;
    char **p = realloc(in->strings, c * sizeof *p);
    if (p == NULL)
      return NULL;
    in->strings = p;
    in->strcap = c;
  }
  char *d = strdup(s);
  if (d)
    in->strings[in->nstr++] = d;
  return d;
}

/* Reads the node list; exits 2 with "stdin:LINE: what" on bad input. */
static void
read_nodes(struct input *in)
{
  char line[LINE_MAX_BYTES + 2];
  unsigned long lineno = 0;
  while (fgets(line, sizeof line, stdin)) {
    lineno++;
    size_t len = strlen(line);
    if (len > 0 && line[len - 1] == '\n')
      line[--len] = '\0';
    else if (!feof(stdin)) {
      fprintf(stderr, "plan: stdin:%lu: line longer than %d bytes\n", lineno,
              LINE_MAX_BYTES);
      exit(2);
    }
    if (memchr(line, '\0', len) != NULL && strlen(line) != len) {
      fprintf(stderr, "plan: stdin:%lu: NUL byte\n", lineno);
      exit(2);
    }
    char *f[4];
    int nf = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, " \t", &save); t;
         t = strtok_r(NULL, " \t", &save)) {
      if (nf == 3) {
        fprintf(stderr, "plan: stdin:%lu: more than 3 fields (ID RACK ZONE)\n",
                lineno);
        exit(2);
      }
      f[nf++] = t;
    }
    if (nf == 0 || f[0][0] == '#')
      continue;
    for (int i = 0; i < nf; i++) {
      if (!valid_label(f[i])) {
        fprintf(stderr, "plan: stdin:%lu: %s '%.80s' is not 1..%d bytes of "
                "[A-Za-z0-9._-]\n", lineno, i == 0 ? "id" : i == 1 ? "rack"
                : "zone", f[i], TREE_ID_MAX);
        exit(2);
      }
    }
    if (strcmp(f[0], "origin") == 0) {
      fprintf(stderr, "plan: stdin:%lu: 'origin' is reserved, not a node id\n",
              lineno);
      exit(2);
    }
    if (in->n == in->cap) {
      size_t c = in->cap ? in->cap * 2 : 64;
      struct tree_node *p = realloc(in->nodes, c * sizeof *p);
      if (p == NULL) {
        fprintf(stderr, "plan: out of memory\n");
        exit(1);
      }
      in->nodes = p;
      in->cap = c;
    }
    struct tree_node *nd = &in->nodes[in->n];
    memset(nd, 0, sizeof *nd);
    nd->id = keep(in, f[0]);
    nd->rack = nf > 1 ? keep(in, f[1]) : NULL;
    nd->zone = nf > 2 ? keep(in, f[2]) : NULL;
    if (nd->id == NULL || (nf > 1 && nd->rack == NULL) ||
        (nf > 2 && nd->zone == NULL)) {
      fprintf(stderr, "plan: out of memory\n");
      exit(1);
    }
    in->n++;
    if (in->n > TREE_MAX_NODES) {
      fprintf(stderr, "plan: stdin:%lu: more than %d nodes\n", lineno,
              TREE_MAX_NODES);
      exit(2);
    }
  }
  if (ferror(stdin)) {
    fprintf(stderr, "plan: stdin: %s\n", strerror(errno));
    exit(1);
  }
  if (in->n == 0) {
    fprintf(stderr, "plan: stdin: no nodes\n");
    exit(2);
  }
}

static void
free_input(struct input *in)
{
  for (size_t i = 0; i < in->nstr; i++)
    free(in->strings[i]);
  free(in->strings);
  free(in->nodes);
}

int
main(int argc, char **argv)
{
  static const struct option opts[] = {
    { "origin-mbit", required_argument, NULL, 'o' },
    { "node-mbit", required_argument, NULL, 'n' },
    { "rtt-ms", required_argument, NULL, 'r' },
    { "local-s", required_argument, NULL, 'l' },
    { "working-set", required_argument, NULL, 'w' },
    { "block-size", required_argument, NULL, 'b' },
    { "read-size", required_argument, NULL, 's' },
    { "burst-size", required_argument, NULL, 'u' },
    { "origin-cap", required_argument, NULL, 'c' },
    { "origin-copies", required_argument, NULL, 'y' },
    { "max-upstreams", required_argument, NULL, 'm' },
    { "fanout", required_argument, NULL, 'k' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  struct tree_params p;
  tree_params_init(&p);
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    const char *name = NULL;
    for (const struct option *o = opts; o->name; o++)
      if (o->val == c)
        name = o->name;
    switch (c) {
    case 'o': p.origin_bw = parse_num(name, optarg, 0.001, 1e6) * 1e6 / 8; break;
    case 'n': p.node_bw = parse_num(name, optarg, 0.001, 1e6) * 1e6 / 8; break;
    case 'r': p.rtt = parse_num(name, optarg, 0, 1e5) / 1000; break;
    case 'l': p.local_time = parse_num(name, optarg, 0, 1e7); break;
    case 'w': p.working_set = (uint64_t) parse_num(name, optarg, 1, 1e15); break;
    case 'b': p.block_size = (uint32_t) parse_num(name, optarg, 512, 1 << 26); break;
    case 's': p.read_size = (uint32_t) parse_num(name, optarg, 1, 1 << 30); break;
    case 'u': p.burst_size = (uint32_t) parse_num(name, optarg, 1, 1 << 30); break;
    case 'c': p.origin_cap = (unsigned) parse_num(name, optarg, 1, 1e6); break;
    case 'y': p.origin_copies = parse_num(name, optarg, 1, 1e6); break;
    case 'm': p.max_upstreams = (unsigned) parse_num(name, optarg, 2,
                                                     TREE_MAX_UPSTREAMS); break;
    case 'k': p.fanout = (unsigned) parse_num(name, optarg, 0,
                                              TREE_FANOUT_MAX); break;
    default: usage_exit();
    }
  }
  if (optind != argc)
    usage_exit();

  struct input in = { 0 };
  read_nodes(&in);

  char err[256] = "";
  struct tree_plan *plan = tree_plan_build(in.nodes, in.n, &p, err, sizeof err);
  if (plan == NULL) {
    fprintf(stderr, "plan: %s\n", err[0] ? err : strerror(errno));
    free_input(&in);
    return 1;
  }
  for (size_t i = 0; i < in.n; i++) {
    int ups[TREE_MAX_UPSTREAMS];
    size_t nu = tree_plan_upstreams(plan, i, ups);
    int parent = tree_plan_parent(plan, i);
    printf("%s %u %s", tree_plan_id(plan, i), tree_plan_depth(plan, i),
           parent == TREE_ORIGIN ? "origin"
           : parent >= 0 ? tree_plan_id(plan, (size_t) parent) : "-");
    for (size_t j = 0; j < nu; j++)
      printf(" %s", ups[j] == TREE_ORIGIN ? "origin"
                    : tree_plan_id(plan, (size_t) ups[j]));
    putchar('\n');
  }
  const struct tree_figures *fg = tree_plan_figures(plan);
  printf("# c=%u k=%u depth=%u interior=%zu max_children=%u predicted=%.3f "
         "t_lb=%.3f\n", fg->origin_children, fg->fanout, fg->depth,
         fg->interior, fg->max_children, fg->t_predicted, fg->t_lb);
  tree_plan_free(plan);
  free_input(&in);
  if (fflush(stdout) == EOF || ferror(stdout)) {
    fprintf(stderr, "plan: stdout: %s\n", strerror(errno));
    return 1;
  }
  return 0;
}
