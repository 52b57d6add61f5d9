// tests/browser/browser_stack.c — runs one browser test script against the whole stack.
//
//   browser_stack SCRIPT.mjs
//
// Starts what a person meets in the demo — a fresh database on the test cluster, the provider
// sandbox (Stripe, Cryptomus, VAPI), and the real sweetyd serving the pages of the repository's web/
// folder — registers a sandbox VAPI account with one agent per plan, then runs
// `node SCRIPT.mjs` (playwright-core driving Debian's Chromium) with the stack's addresses in its
// environment:
//   SWEETY_BASE_URL      the daemon, e.g. http://127.0.0.1:40123
//   SWEETY_SANDBOX_URL   the sandbox (control API under /_sandbox/)
//   SWEETY_SHOTS_DIR     where screenshots go (the test output folder)
//   SWEETY_CHROMIUM      the browser to launch
// (SWEETY_NODE, SWEETY_CHROMIUM and SWEETY_SHOTS_DIR, when set for this program, are passed on.)
// Exit status: the script's; 1 when the stack cannot start. The daemon must also stop cleanly
// (exit 0 within 10 s) for the run to pass: under ASan that includes leaks.
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/integration/daemon.h"
#include "tests/integration/sandbox.h"

#define VAPI_KEY "vapi_browser_test_key"
#define VAPI_LIMIT 10
#define SCRIPT_TIMEOUT_MS (240 * 1000)

static int ctl(test_daemon_t *d, const char *const *args, char *line, size_t size) {
    char *out = NULL, *err = NULL;
    int rc = test_daemon_ctl(d, args, &out, &err);
    if (rc != 0) fprintf(stderr, "sweetyctl %s %s failed: %s\n", args[0], args[1] ? args[1] : "", err ? err : "");
    if (line) {
        snprintf(line, size, "%s", out ? out : "");
        line[strcspn(line, "\n")] = '\0';
    }
    free(out);
    free(err);
    return rc;
}

// A sandbox VAPI key, an account using it, and one agent per plan, as scripts/demo does.
static int register_vapi(test_daemon_t *d, const test_sandbox_t *sb) {
    char body[128], account[64];
    snprintf(body, sizeof body, "{\"key\":\"%s\",\"limit\":%d}", VAPI_KEY, VAPI_LIMIT);
    if (test_sandbox_call(sb, "POST", "/_sandbox/vapi/keys", body, NULL) != 200) return -1;
    setenv("SWEETY_BROWSER_VAPI_KEY", VAPI_KEY, 1);
    const char *add[] = {"account", "add", "--name", "browser", "--api-key-env", "SWEETY_BROWSER_VAPI_KEY",
                         "--phone-number-id", "pn_browser_0001", "--max-concurrent", "10", NULL};
    int rc = ctl(d, add, account, sizeof account);
    unsetenv("SWEETY_BROWSER_VAPI_KEY");
    if (rc != 0) return -1;
    const char *plans[] = {"free_trial", "standard", "extended", "premium"};
    for (size_t i = 0; i < 4; i++) {
        char assistant[32];
        snprintf(assistant, sizeof assistant, "asst_%s", plans[i]);
        const char *set[] = {"plan", "set", plans[i], "--assistant-id", assistant, NULL};
        const char *agent[] = {"agent", "add", "--account", account, "--plan", plans[i], "--max-concurrent", "5", NULL};
        if (ctl(d, set, NULL, 0) != 0 || ctl(d, agent, NULL, 0) != 0) return -1;
    }
    return 0;
}

static void print_tail(const char *what, const char *path) {
    char *text = harness_read_file(path);
    if (!text) return;
    size_t n = strlen(text);
    const char *from = n > 6000 ? text + n - 6000 : text;
    fprintf(stderr, "---- %s (last lines) ----\n%s\n", what, from);
    free(text);
}

static int run_script(const char *script, const test_daemon_t *d, const test_sandbox_t *sb, const char *shots) {
    const char *chromium = getenv("SWEETY_CHROMIUM") ? getenv("SWEETY_CHROMIUM") : "/usr/bin/chromium";
    if (access(chromium, X_OK) != 0) {
        fprintf(stderr, "browser test: %s is not there (scripts/lib.sh installs Debian's chromium)\n", chromium);
        return 1;
    }
    char env_base[128], env_sb[128], env_shots[700], env_chromium[600];
    snprintf(env_base, sizeof env_base, "SWEETY_BASE_URL=%s", d->base_url);
    snprintf(env_sb, sizeof env_sb, "SWEETY_SANDBOX_URL=%s", sb->url);
    snprintf(env_shots, sizeof env_shots, "SWEETY_SHOTS_DIR=%s", shots);
    snprintf(env_chromium, sizeof env_chromium, "SWEETY_CHROMIUM=%s", chromium);
    const char *env[] = {env_base, env_sb, env_shots, env_chromium, NULL};
    const char *node = getenv("SWEETY_NODE") ? getenv("SWEETY_NODE") : "/usr/bin/node";
    const char *argv[] = {node, script, NULL};
    char log[700];
    snprintf(log, sizeof log, "%s/script.log", d->dir);
    harness_proc_t *p = harness_proc_spawn(argv, env, log);
    if (!p) return 1;
    int status = 0;
    int rc = harness_proc_wait(p, SCRIPT_TIMEOUT_MS, &status);
    if (rc != 0) {
        fprintf(stderr, "browser test: %s did not finish in %d s\n", script, SCRIPT_TIMEOUT_MS / 1000);
        harness_proc_kill(p, SIGKILL);
        harness_proc_wait(p, 5000, NULL);
    }
    harness_proc_destroy(&p);
    char *out = harness_read_file(log);
    fputs(out ? out : "", stdout);
    free(out);
    if (rc != 0) return 1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: browser_stack SCRIPT.mjs\n");
        return 2;
    }
    const char *src = getenv("SWEETY_SOURCE_DIR") ? getenv("SWEETY_SOURCE_DIR") : ".";
    const char *shots = getenv("SWEETY_SHOTS_DIR") ? getenv("SWEETY_SHOTS_DIR") : "browser-output";
    mkdir(shots, 0755);

    test_daemon_t d;
    test_sandbox_t sb;
    char dir[512];
    if (harness_tmpdir(dir, sizeof dir) != 0) return 1;
    test_sandbox_reserve(&sb, dir);
    harness_rmtree(dir);
    char more[1024], extra[2048];
    // Short retries so a failed call's story fits in a test; the pages of this checkout.
    snprintf(more, sizeof more,
             "[http]\nweb_root = %s/web\nbooking_rate_per_min = 10000\n"
             "[scheduler]\nmax_retries = 1\nretry_base_s = 1\nretry_max_s = 2\n",
             src);
    test_sandbox_daemon_conf(&sb, more, extra, sizeof extra);
    int code = 1;
    if (test_daemon_prepare(&d, NULL, extra) != 0) {
        fprintf(stderr, "browser test: cannot prepare the daemon\n");
        return 1;
    }
    snprintf(sb.log, sizeof sb.log, "%s/sandbox.log", d.dir);
    if (test_sandbox_start(&sb, d.base_url) != 0 || test_daemon_start(&d) != 0 || register_vapi(&d, &sb) != 0) {
        fprintf(stderr, "browser test: the stack did not start\n");
    } else {
        code = run_script(argv[1], &d, &sb, shots);
    }
    int stop = test_daemon_stop(&d, 10000);
    test_sandbox_stop(&sb);
    if (stop != 0) {
        fprintf(stderr, "browser test: sweetyd exited %d\n", stop);
        if (code == 0) code = 1;
    }
    if (code != 0) {
        print_tail("sweetyd log", d.log);
        print_tail("sandbox log", sb.log);
    }
    test_daemon_cleanup(&d);
    return code;
}
