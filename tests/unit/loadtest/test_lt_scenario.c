/* Scenario files: the shipped ones parse; bad ones are refused with the field named. */
#include "common/cm_err.h"
#include "loadtest/lt_scenario.h"
#include "loadtest/lt_sched.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static const char *src_dir(void)
{
    const char *s = getenv("FLASHGATE_SRC");
    return s ? s : ".";
}

static void load_shipped(const char *name, lt_scenario_t *sc)
{
    char path[1024], eb[512] = "";
    snprintf(path, sizeof(path), "%s/loadtest/scenarios/%s", src_dir(), name);
    int rc = lt_scenario_load(sc, path, eb, sizeof(eb));
    if (rc != 0)
        fail_msg("%s: %s", path, eb);
}

static void test_shipped_files(void **state)
{
    (void)state;
    lt_scenario_t sc;
    load_shipped("standard.json", &sc);
    assert_string_equal(sc.name, "standard");
    assert_int_equal(sc.sale_stock, 1000);
    assert_int_equal(sc.users, 100000);
    assert_int_equal(sc.n_targets, 1);
    /* silent about the lottery: the sale gets the gateway's default window */
    assert_false(sc.has_fair_window);
    assert_false(sc.has_fair_early);
    assert_true(sc.n_segments >= 3);
    /* the default run stays bounded: no more first presses than users, and
     * at most (1 + retries) buys + polls per user */
    double expected = lt_sched_expected(sc.segments, sc.n_segments, sc.duration_s);
    assert_true(expected > 10000 && expected <= (double)sc.users);
    lt_scenario_free(&sc);

    load_shipped("bot-heavy.json", &sc);
    assert_true(sc.bot_fraction >= 0.3);
    assert_int_equal(sc.fair_window_ms, 0);
    assert_true(sc.has_fair_window); /* first-come, said: the contrast to bot-heavy-fair */
    lt_scenario_free(&sc);
    load_shipped("bot-heavy-fair.json", &sc);
    assert_true(sc.bot_fraction >= 0.3);
    assert_int_equal(sc.fair_window_ms, 2000);
    assert_int_equal(sc.fair_early_ms, 500);
    lt_scenario_free(&sc);
    load_shipped("overload-10x.json", &sc);
    lt_scenario_free(&sc);
    load_shipped("fleet-3.json", &sc);
    assert_int_equal(sc.n_targets, 3);
    assert_string_equal(sc.targets[2], "http://127.0.0.1:8083");
    lt_scenario_free(&sc);
}

static void test_defaults_and_overrides(void **state)
{
    (void)state;
    lt_scenario_t sc;
    char eb[256];
    const char *j = "{\"targets\":[\"http://127.0.0.1:1\"],\"sale\":{\"create\":false},"
                    "\"arrivals\":[{\"kind\":\"plateau\",\"duration_s\":2,\"rate\":10}]}";
    assert_int_equal(lt_scenario_parse(&sc, j, eb, sizeof(eb)), 0);
    assert_int_equal(sc.per_user_limit, 1);
    assert_int_equal(sc.qty, 1);
    assert_string_equal(sc.topic, "flashgate.orders");
    assert_true(sc.segments[0].rate_end == 10);
    /* a crowd that queues, never gives up and buys only, unless told otherwise */
    assert_int_equal(sc.connection_mode, LT_CONN_QUEUE);
    assert_int_equal(sc.connections_max, 4096);
    assert_int_equal(sc.give_up_ms, 0);
    assert_true(sc.noncore_share == 0);
    lt_scenario_set_targets(&sc, "http://127.0.0.1:2,http://127.0.0.1:3");
    assert_int_equal(sc.n_targets, 2);
    assert_string_equal(sc.targets[1], "http://127.0.0.1:3");
    assert_int_equal(lt_scenario_validate(&sc, eb, sizeof(eb)), 0);
    lt_scenario_free(&sc);
}

/* Each bad file and the exact message it must produce. */
static const struct {
    const char *json, *msg;
} bad[] = {
    {"{\"crowd\":{\"users\":0}}", "scenario: crowd.users: must be an integer >= 1"},
    {"{\"crowd\":{\"users\":\"many\"}}", "scenario: crowd.users: must be an integer >= 1"},
    {"{\"crowd\":{\"users\":1.5}}", "scenario: crowd.users: must be an integer >= 1"},
    {"{\"crowd\":{\"userz\":10}}", "scenario: crowd.userz: unknown field"},
    {"{\"crowd\":{\"bot_fraction\":1.5}}",
     "scenario: crowd.bot_fraction: must be a number between 0 and 1"},
    {"{\"crowd\":[]}", "scenario: crowd: must be an object"},
    {"{\"sale\":{\"stock\":-1}}", "scenario: sale.stock: must be an integer between 0 and 1000000000"},
    {"{\"sale\":{\"id\":\"\"}}", "scenario: sale.id: must be a non-empty string"},
    {"{\"targets\":[\"ftp://x\"]}", "scenario: targets[0]: must be a URL like http://127.0.0.1:8080"},
    {"{\"targets\":[]}", "scenario: targets: must be an array of 1 to 16 URLs"},
    {"{\"connections\":0}", "scenario: connections: must be an integer between 1 and 20000"},
    {"{\"connection_mode\":\"pool\"}", "scenario: connection_mode: must be \"queue\" or \"open\""},
    {"{\"connection_mode\":1}", "scenario: connection_mode: must be \"queue\" or \"open\""},
    {"{\"connections_max\":0}", "scenario: connections_max: must be an integer between 1 and 20000"},
    {"{\"connections_max\":20001}",
     "scenario: connections_max: must be an integer between 1 and 20000"},
    {"{\"give_up_ms\":-1}", "scenario: give_up_ms: must be an integer between 0 and 600000"},
    {"{\"give_up_ms\":1.5}", "scenario: give_up_ms: must be an integer between 0 and 600000"},
    {"{\"noncore\":{\"share\":1.2}}", "scenario: noncore.share: must be a number between 0 and 1"},
    {"{\"noncore\":{\"path\":\"\"}}", "scenario: noncore.path: must be a non-empty string"},
    {"{\"noncore\":{\"url\":\"/x\"}}", "scenario: noncore.url: unknown field"},
    {"{\"noncore\":7}", "scenario: noncore: must be an object"},
    {"{\"connection_mode\":\"open\",\"connections\":100,\"connections_max\":50,"
     "\"sale\":{\"create\":false},\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1,\"rate\":5}]}",
     "scenario: connections_max: must be between connections (100) and 20000 in open mode"},
    {"{\"warm_connections\":-1}",
     "scenario: warm_connections: must be an integer between 0 and 20000"},
    {"{\"connections\":8,\"warm_connections\":9,\"sale\":{\"create\":false},"
     "\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1,\"rate\":5}]}",
     "scenario: warm_connections: at most connections (8): the pool, or the idle cache in open "
     "mode"},
    {"{\"request_start\":1}", "scenario: request_start: must be true or false"},
    {"{\"loops\":0}", "scenario: loops: must be an integer between 1 and 16"},
    {"{\"loops\":17}", "scenario: loops: must be an integer between 1 and 16"},
    {"{\"connections\":2,\"loops\":3,\"sale\":{\"create\":false},"
     "\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1,\"rate\":5}]}",
     "scenario: loops: at most connections (2): each loop has its own share of the connections"},
    {"{\"give_up_ms\":3000,\"request_timeout_ms\":2000,\"sale\":{\"create\":false},"
     "\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1,\"rate\":5}]}",
     "scenario: give_up_ms: must not exceed request_timeout_ms (2000)"},
    {"{\"noncore\":{\"share\":0.7},\"sale\":{\"create\":false},"
     "\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1,\"rate\":5}]}",
     "scenario: noncore.path: must start with / when noncore.share > 0"},
    {"{\"noncore\":{\"share\":0.7,\"path\":\"/v1/page/a b\"},\"sale\":{\"create\":false},"
     "\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1,\"rate\":5}]}",
     "scenario: noncore.path: no spaces or control characters"},
    {"{\"behaviour\":{\"poll_max\":-3}}",
     "scenario: behaviour.poll_max: must be an integer between 0 and 10000"},
    {"{\"speed\":3}", "scenario: speed: unknown field"},
    {"{}", "scenario: arrivals: is required (a non-empty array of segments)"},
    {"{\"arrivals\":[]}", "scenario: arrivals: must be a non-empty array of segments"},
    {"{\"arrivals\":[{\"kind\":\"wave\",\"duration_s\":1,\"rate\":1}]}",
     "scenario: arrivals[0].kind: must be one of ramp, spike, plateau, decay, pause"},
    {"{\"arrivals\":[{\"kind\":\"spike\",\"rate\":1}]}", "scenario: arrivals[0].duration_s: is required"},
    {"{\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1}]}", "scenario: arrivals[0].rate: is required"},
    {"{\"arrivals\":[{\"kind\":\"ramp\",\"duration_s\":1,\"rate\":1},"
     "{\"kind\":\"spike\",\"duration_s\":1,\"rate\":-5}]}",
     "scenario: arrivals[1].rate: must be a number between 0 and 1e+07"},
    {"{\"arrivals\":[{\"kind\":\"pause\",\"duration_s\":1}]}",
     "scenario: arrivals: the profile brings fewer than one arrival"},
    {"{\"sale\":{\"create\":true},\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1,\"rate\":5}]}",
     "scenario: sale.create: needs admin (the admin API URL)"},
    {"{\"sale\":{\"registration\":{\"opens_s\":0}}}",
     "scenario: sale.registration: opens_s and closes_s are required"},
    {"{\"sale\":{\"registration\":{\"opens_s\":0,\"closes_s\":1,\"until\":2}}}",
     "scenario: sale.registration.until: unknown field"},
    {"{\"sale\":{\"registration\":[0,1]}}", "scenario: sale.registration: must be an object"},
    {"{\"sale\":{\"registration\":{\"opens_s\":0,\"closes_s\":1,\"share\":{\"fans\":1}}}}",
     "scenario: sale.registration.share.fans: unknown class (people, bots, aggressive_bots, "
     "scalpers)"},
    {"{\"sale\":{\"registration\":{\"opens_s\":0,\"closes_s\":1,\"share\":{\"people\":1.5}}}}",
     "scenario: sale.registration.share.people: must be a number between 0 and 1"},
    {"{\"sale\":{\"registration\":{\"opens_s\":-1,\"closes_s\":1}}}",
     "scenario: sale.registration.opens_s: must be a number between 0 and 3600"},
    {"{\"admin\":\"http://127.0.0.1:2\",\"sale\":{\"fair_window_ms\":1000,\"start_offset_s\":3,"
     "\"registration\":{\"opens_s\":2,\"closes_s\":2}},"
     "\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1,\"rate\":5}]}",
     "scenario: sale.registration.closes_s: must be after opens_s"},
    {"{\"admin\":\"http://127.0.0.1:2\",\"sale\":{\"start_offset_s\":3,"
     "\"registration\":{\"opens_s\":0,\"closes_s\":2}},"
     "\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1,\"rate\":5}]}",
     "scenario: sale.registration: needs a start-window lottery (sale.fair_window_ms > 0): the "
     "lottery is what takes only registered persons"},
    {"{\"admin\":\"http://127.0.0.1:2\",\"sale\":{\"fair_window_ms\":1000,\"fair_early_ms\":500,"
     "\"start_offset_s\":3,\"registration\":{\"opens_s\":0,\"closes_s\":2.6}},"
     "\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1,\"rate\":5}]}",
     "scenario: sale.registration.closes_s: must be no later than the lottery window's opening "
     "(start_offset_s - fair_early_ms: 2.500)"},
    {"{\"sale\":{\"create\":false,\"fair_window_ms\":1000,\"start_offset_s\":3,"
     "\"registration\":{\"opens_s\":0,\"closes_s\":2}},"
     "\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1,\"rate\":5}]}",
     "scenario: sale.registration: needs sale.create (flashgate-load sets the registration "
     "window when it creates the sale)"},
    {"[1,2]", "scenario: (top level): must be a JSON object"},
    {"{\"seed\": 1,", "scenario: line 1 column 11: string or '}' expected near end of file"},
    {"{\"seed\":1,\"seed\":2}", "scenario: line 1 column 49: duplicate object key near '\"seed\"'"},
};

static void test_bad_files_name_the_field(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        lt_scenario_t sc;
        char eb[256] = "";
        /* every case gets a valid target so that only its own fault is reported */
        char json[1024];
        const char *body = bad[i].json;
        if (body[0] == '{' && strstr(body, "\"targets\"") == NULL && strcmp(body, "{") != 0 &&
            strstr(body, "seed\": 1,") == NULL)
            snprintf(json, sizeof(json), "{\"targets\":[\"http://127.0.0.1:1\"]%s%s",
                     strcmp(body, "{}") == 0 ? "" : ",", body + 1);
        else
            snprintf(json, sizeof(json), "%s", body);
        int rc = lt_scenario_parse(&sc, json, eb, sizeof(eb));
        if (rc != CM_EINVAL || strcmp(eb, bad[i].msg) != 0)
            fail_msg("case %zu %s: rc %d, message \"%s\", want \"%s\"", i, json, rc, eb,
                     bad[i].msg);
        lt_scenario_free(&sc);
    }
}

static void test_crowd_like_the_internet(void **state)
{
    (void)state;
    lt_scenario_t sc;
    char eb[256] = "";
    const char *j = "{\"targets\":[\"http://127.0.0.1:1\"],\"sale\":{\"create\":false},"
                    "\"connections\":64,\"connection_mode\":\"open\",\"connections_max\":3000,"
                    "\"give_up_ms\":1500,\"request_timeout_ms\":2000,"
                    "\"noncore\":{\"share\":0.7,\"path\":\"/v1/page/item-1?x=1\"},"
                    "\"arrivals\":[{\"kind\":\"plateau\",\"duration_s\":2,\"rate\":10}]}";
    if (lt_scenario_parse(&sc, j, eb, sizeof(eb)) != 0)
        fail_msg("%s", eb);
    assert_int_equal(sc.connection_mode, LT_CONN_OPEN);
    assert_string_equal(lt_conn_mode_name(sc.connection_mode), "open");
    assert_int_equal(sc.connections_max, 3000);
    assert_int_equal(sc.give_up_ms, 1500);
    assert_true(sc.noncore_share == 0.7);
    assert_string_equal(sc.noncore_path, "/v1/page/item-1?x=1");
    /* flags override, then validate catches what no longer fits */
    lt_conn_mode_t m = LT_CONN_OPEN;
    assert_int_equal(lt_conn_mode_parse("queue", &m), 0);
    assert_int_equal(m, LT_CONN_QUEUE);
    assert_int_equal(lt_conn_mode_parse("Open", &m), CM_EINVAL);
    assert_int_equal(lt_conn_mode_parse(NULL, &m), CM_EINVAL);
    sc.connections_max = 10;
    assert_int_equal(lt_scenario_validate(&sc, eb, sizeof(eb)), CM_EINVAL);
    assert_string_equal(eb, "scenario: connections_max: must be between connections (64) and "
                            "20000 in open mode");
    sc.connection_mode = LT_CONN_QUEUE; /* the cap means nothing to a queueing crowd */
    assert_int_equal(lt_scenario_validate(&sc, eb, sizeof(eb)), 0);
    lt_scenario_free(&sc);
}

/* sale.registration: the window on the run's clock and who registers, by class
 * (every class by default); none without the section (or with null). */
static void test_registration(void **state)
{
    (void)state;
    lt_scenario_t sc;
    char eb[256] = "";
    const char *j = "{\"targets\":[\"http://127.0.0.1:1\"],\"admin\":\"http://127.0.0.1:2\","
                    "\"sale\":{\"fair_window_ms\":1000,\"fair_early_ms\":500,\"start_offset_s\":3,"
                    "\"registration\":{\"opens_s\":0.5,\"closes_s\":2.5,"
                    "\"share\":{\"people\":0.25,\"scalpers\":0}}},"
                    "\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1,\"rate\":5}]}";
    if (lt_scenario_parse(&sc, j, eb, sizeof(eb)) != 0)
        fail_msg("%s", eb);
    assert_true(sc.reg);
    assert_true(sc.reg_opens_s == 0.5 && sc.reg_closes_s == 2.5);
    assert_true(sc.reg_share[lt_scenario_class("people")] == 0.25);
    assert_true(sc.reg_share[lt_scenario_class("scalpers")] == 0);
    assert_true(sc.reg_share[lt_scenario_class("bots")] == 1);
    assert_true(sc.reg_share[lt_scenario_class("aggressive_bots")] == 1);
    assert_int_equal(lt_scenario_class("fans"), -1);
    lt_scenario_free(&sc);
    j = "{\"targets\":[\"http://127.0.0.1:1\"],\"sale\":{\"create\":false,\"registration\":null},"
        "\"arrivals\":[{\"kind\":\"spike\",\"duration_s\":1,\"rate\":5}]}";
    assert_int_equal(lt_scenario_parse(&sc, j, eb, sizeof(eb)), 0);
    assert_false(sc.reg);
    lt_scenario_free(&sc);
    /* the shipped sybil crowd: a lottery with registration, scalpers all registered */
    load_shipped("sybil.json", &sc);
    assert_true(sc.reg && sc.fair_window_ms > 0);
    assert_true(sc.reg_closes_s * 1000 <= sc.start_offset_s * 1000 - sc.fair_early_ms);
    assert_true(sc.reg_share[lt_scenario_class("scalpers")] == 1);
    assert_int_equal(sc.operators * sc.operator_addresses, 1000);
    assert_int_equal(sc.accounts_per_operator, 20);
    assert_int_equal(sc.persons_per_operator, 2);
    lt_scenario_free(&sc);
}

static void test_missing_file(void **state)
{
    (void)state;
    lt_scenario_t sc;
    char eb[256];
    assert_true(lt_scenario_load(&sc, "/nonexistent/x.json", eb, sizeof(eb)) < 0);
    assert_non_null(strstr(eb, "/nonexistent/x.json"));
    lt_scenario_free(&sc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shipped_files),
        cmocka_unit_test(test_defaults_and_overrides),
        cmocka_unit_test(test_bad_files_name_the_field),
        cmocka_unit_test(test_crowd_like_the_internet),
        cmocka_unit_test(test_registration),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
