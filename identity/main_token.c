/*
 * flashgate-token: mints a buyer token from the data dir's identity key (the
 * key flashgate generates at its first start), for curl and rehearsals.
 */
#include "identity/id.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: flashgate-token --data-dir DIR [options] USER\n"
            "       flashgate-token --data-dir DIR --jwks\n"
            "Mints a JWT for USER signed with DIR/" ID_KEY_FILE " (ES256) and prints it.\n"
            "\n"
            "  --data-dir DIR    flashgate's data dir (holds " ID_KEY_FILE ")\n"
            "  --key FILE        a private key file instead (PEM; RSA, P-256, P-384, Ed25519)\n"
            "  --init            generate DIR/" ID_KEY_FILE " if it does not exist\n"
            "  --ttl S           seconds until exp (default 3600, 1..31536000)\n"
            "  --person P        the person claim (a hash of a verified phone, card, ...)\n"
            "  --person-claim N  its claim name (default \"person\")\n"
            "  --user-claim N    the user claim's name (default \"sub\")\n"
            "  --issuer I        iss (default \"flashgate\")\n"
            "  --audience A      aud (default \"flashgate\")\n"
            "  --claim k=v       an extra claim (repeatable): v true/false is a boolean, a decimal\n"
            "                    integer a number, anything else a string; k:=JSON for any JSON\n"
            "                    value (k:='\"true\"' for the string)\n"
            "  --jwks            print the public JWK set instead of a token\n"
            "  --count N         N tokens, one a line, for users USER-0 .. USER-<N-1> (benches)\n"
            "  -h, --help        this text\n"
            "\n"
            "USER and P: 1..64 characters of A-Z a-z 0-9 . _ -\n"
            "Example: curl -H \"Authorization: Bearer $(flashgate-token --data-dir data alice)\" ...\n");
}

/* k=v's value: true/false a boolean, a decimal integer (-?[0-9]{1,18}) a number, else a
 * string; eligibility and account-age claims are minted this way. */
static json_t *plain_value(const char *v)
{
    if (strcmp(v, "true") == 0)
        return json_true();
    if (strcmp(v, "false") == 0)
        return json_false();
    const char *d = v + (v[0] == '-');
    size_t n = strlen(d);
    if (n >= 1 && n <= 18 && strspn(d, "0123456789") == n)
        return json_integer(strtoll(v, NULL, 10));
    return json_string(v);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"data-dir", required_argument, NULL, 'd'}, {"key", required_argument, NULL, 'k'},
        {"init", no_argument, NULL, 'i'},           {"ttl", required_argument, NULL, 't'},
        {"person", required_argument, NULL, 'p'},   {"person-claim", required_argument, NULL, 'P'},
        {"user-claim", required_argument, NULL, 'U'}, {"issuer", required_argument, NULL, 's'},
        {"audience", required_argument, NULL, 'a'}, {"claim", required_argument, NULL, 'c'},
        {"jwks", no_argument, NULL, 'j'},           {"help", no_argument, NULL, 'h'},
        {"count", required_argument, NULL, 'n'},
        {NULL, 0, NULL, 0},
    };
    const char *data_dir = NULL, *key = NULL;
    bool init = false, jwks = false;
    long ttl = 3600, count = 0;
    id_claims_t cl = {0};
    json_t *extra = json_object();
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            data_dir = optarg;
            break;
        case 'n': {
            char *end;
            count = strtol(optarg, &end, 10);
            if (*end || count < 1 || count > 10000000) {
                fprintf(stderr, "flashgate-token: --count %s: must be 1..10000000\n", optarg);
                return 2;
            }
            break;
        }
        case 'k':
            key = optarg;
            break;
        case 'i':
            init = true;
            break;
        case 't': {
            char *end;
            ttl = strtol(optarg, &end, 10);
            if (*end || ttl < 1 || ttl > 31536000) {
                fprintf(stderr, "flashgate-token: --ttl %s: must be 1..31536000 seconds\n", optarg);
                return 2;
            }
            break;
        }
        case 'p':
            cl.person = optarg;
            break;
        case 'P':
            cl.person_claim = optarg;
            break;
        case 'U':
            cl.user_claim = optarg;
            break;
        case 's':
            cl.issuer = optarg;
            break;
        case 'a':
            cl.audience = optarg;
            break;
        case 'c': {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg) {
                fprintf(stderr, "flashgate-token: --claim %s: expected k=v or k:=JSON\n", optarg);
                return 2;
            }
            bool raw = eq > optarg && eq[-1] == ':';
            char name[128];
            size_t nl = (size_t)(eq - optarg) - (raw ? 1 : 0);
            if (nl == 0 || nl >= sizeof(name)) {
                fprintf(stderr, "flashgate-token: --claim %s: bad claim name\n", optarg);
                return 2;
            }
            memcpy(name, optarg, nl);
            name[nl] = '\0';
            json_t *val;
            if (raw) {
                json_error_t jerr;
                val = json_loads(eq + 1, JSON_DECODE_ANY, &jerr);
                if (!val) {
                    fprintf(stderr, "flashgate-token: --claim %s: not JSON: %s\n", optarg,
                            jerr.text);
                    return 2;
                }
            } else {
                val = plain_value(eq + 1);
            }
            json_object_set_new(extra, name, val);
            break;
        }
        case 'j':
            jwks = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!data_dir == !key) {
        fprintf(stderr, "flashgate-token: give exactly one of --data-dir DIR or --key FILE\n");
        usage(stderr);
        return 2;
    }
    if (!jwks && optind != argc - 1) {
        fprintf(stderr, "flashgate-token: give exactly one USER\n");
        usage(stderr);
        return 2;
    }
    char err[300];
    id_signer_t *s = data_dir ? id_keys_ensure(data_dir, init, err, sizeof(err))
                              : id_signer_open(key, err, sizeof(err));
    if (!s) {
        fprintf(stderr, "flashgate-token: %s\n", err);
        return 1;
    }
    int rc = 0;
    if (jwks) {
        char *j = id_signer_jwks_json(s);
        printf("%s\n", j ? j : "");
        rc = j ? 0 : 1;
        free(j);
    } else {
        cl.user = argv[optind];
        cl.iat = (int64_t)time(NULL);
        cl.exp = cl.iat + ttl;
        char *ex = json_object_size(extra) ? json_dumps(extra, JSON_COMPACT) : NULL;
        cl.extra_json = ex;
        char tok[ID_TOKEN_LIMIT], user[ID_USER_MAX + 1];
        for (long i = 0; i < (count ? count : 1) && rc == 0; i++) {
            if (count) {
                int ul = snprintf(user, sizeof(user), "%s-%ld", argv[optind], i);
                if (ul < 0 || (size_t)ul >= sizeof(user)) {
                    fprintf(stderr, "flashgate-token: USER-%ld is longer than %d\n", i,
                            ID_USER_MAX);
                    rc = 1;
                    break;
                }
                cl.user = user;
            }
            int n = id_signer_mint(s, &cl, tok, sizeof(tok), err, sizeof(err));
            if (n < 0) {
                fprintf(stderr, "flashgate-token: %s\n", err);
                rc = 1;
            } else {
                printf("%s\n", tok);
            }
        }
        free(ex);
    }
    json_decref(extra);
    id_signer_free(s);
    return rc;
}
