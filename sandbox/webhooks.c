// sandbox/webhooks.c — see webhooks.h.
//
// Design: every event becomes a record (kept for GET /_sandbox/webhooks, at most MAX_RECORDS). A
// delivery is a job naming the record by sequence number; a job waits in `queue` until it is due,
// then the delivery thread copies the record's URL and body into a curl easy handle ("flight").
// When the attempt ends, the job is either finished (2xx, or out of retries) or put back in the
// queue with its next due time, so one failing receiver never blocks the others. With
// concurrency 1 (the default) jobs start one at a time in queue order, which makes "reverse"
// and "shuffle" releases arrive in exactly that order. reset() bumps a generation number so
// that jobs and flights from before it are discarded when the thread next sees them.
#include "sandbox/webhooks.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "sandbox/sbutil.h"
#include "sandbox/sign.h"

#define MAX_RECORDS 10000

typedef enum { MODE_NORMAL, MODE_HOLD, MODE_DROP } wh_mode_t;

typedef struct {
    uint64_t seq;
    char *id, *provider, *type, *url, *secret, *body;
    size_t body_len;
    char *headers;      // extra header lines, '\n'-separated, or NULL
    char *hmac_secret;  // VAPI HMAC signing, or NULL
    size_t max_retries;
    int64_t timeout_ms;
    int64_t created_s;
    bool held, dropped;
    int queued;        // deliveries waiting or in flight
    int attempts;      // HTTP attempts made
    int delivered;     // 2xx answers
    int failed;        // deliveries that ran out of retries
    long last_status;  // 0: no HTTP answer (refused, timeout)
    char last_error[96];
} record_t;

typedef struct job {
    uint64_t seq, gen;
    int attempts;      // attempts already made by this delivery
    int64_t due_ms;    // monotonic
    struct job *next;
} job_t;

typedef struct {
    CURL *easy;
    struct curl_slist *headers;
    job_t *job;
    char *id, *type, *url;
    int64_t started_ms;
    char errbuf[CURL_ERROR_SIZE];
} flight_t;

struct webhooks_t {
    webhooks_config_t cfg;      // read-only after new()
    pthread_t thread;
    CURLM *multi;               // used by the delivery thread; others only call curl_multi_wakeup
    pthread_mutex_t mu;         // guards everything below
    bool stop;
    wh_mode_t mode;
    int concurrency;
    uint64_t next_seq, gen;
    sb_vec_t records;           // record_t*, ascending seq
    job_t *queue, *queue_tail;
};

static void record_free(void *p) {
    record_t *r = p;
    if (!r) return;
    free(r->id);
    free(r->provider);
    free(r->type);
    free(r->url);
    free(r->secret);
    free(r->body);
    free(r->headers);
    free(r->hmac_secret);
    free(r);
}

// Caller holds mu.
static record_t *find_seq(webhooks_t *self, uint64_t seq) {
    if (self->records.len == 0) return NULL;
    record_t *first = self->records.items[0];
    if (seq < first->seq || seq - first->seq >= self->records.len) return NULL;
    record_t *r = self->records.items[seq - first->seq];
    return r->seq == seq ? r : NULL;
}

// Caller holds mu.
static int enqueue(webhooks_t *self, record_t *r, int64_t due_ms) {
    job_t *j = calloc(1, sizeof *j);
    if (!j) return -1;
    j->seq = r->seq;
    j->gen = self->gen;
    j->due_ms = due_ms;
    if (self->queue_tail)
        self->queue_tail->next = j;
    else
        self->queue = j;
    self->queue_tail = j;
    r->queued++;
    return 0;
}

static void requeue(webhooks_t *self, job_t *j) {
    j->next = NULL;
    if (self->queue_tail)
        self->queue_tail->next = j;
    else
        self->queue = j;
    self->queue_tail = j;
}

static void free_queue(webhooks_t *self) {
    for (job_t *j = self->queue, *next; j; j = next) {
        next = j->next;
        free(j);
    }
    self->queue = self->queue_tail = NULL;
}

// ---- delivery thread ---------------------------------------------------------------------------
static size_t discard_body(char *ptr, size_t size, size_t nmemb, void *userdata) {
    (void)ptr;
    (void)userdata;
    return size * nmemb;
}

static void flight_free(flight_t *f) {
    if (!f) return;
    if (f->easy) curl_easy_cleanup(f->easy);
    curl_slist_free_all(f->headers);
    free(f->job);
    free(f->id);
    free(f->type);
    free(f->url);
    free(f);
}

// Builds the easy handle for one attempt. Caller holds mu (reads the record).
static flight_t *flight_new(webhooks_t *self, job_t *job, record_t *r) {
    flight_t *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    f->job = job;
    f->id = strdup(r->id);
    f->type = strdup(r->type);
    f->url = strdup(r->url);
    f->easy = curl_easy_init();
    f->started_ms = sb_mono_ms();
    if (!f->id || !f->type || !f->url || !f->easy) {
        f->job = NULL;
        flight_free(f);
        return NULL;
    }
    struct curl_slist *h = NULL;
    if (r->secret) {
        char sig[160], line[200];
        if (sb_stripe_signature_header(r->secret, sb_now_s(), r->body, r->body_len, sig, sizeof sig) == 0) {
            snprintf(line, sizeof line, "Stripe-Signature: %s", sig);
            h = curl_slist_append(h, line);
        }
        h = curl_slist_append(h, "Content-Type: application/json; charset=utf-8");
        h = curl_slist_append(h, "User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)");
    } else {
        h = curl_slist_append(h, "Content-Type: application/json");
        h = curl_slist_append(h, "User-Agent: sweety-sandbox webhooks");
    }
    for (char *line = r->headers, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        char one[1024];
        snprintf(one, sizeof one, "%.*s", (int)(nl ? (size_t)(nl - line) : strlen(line)), line);
        h = curl_slist_append(h, one);
    }
    if (r->hmac_secret) {   // signed at each attempt, with that attempt's time
        char sig[SB_SHA256_HEX_SIZE], line[120];
        int64_t ts = util_now_us() / 1000;
        if (sb_vapi_hmac(r->hmac_secret, ts, r->body, r->body_len, sig) == 0) {
            snprintf(line, sizeof line, "x-timestamp: %lld", (long long)ts);
            h = curl_slist_append(h, line);
            snprintf(line, sizeof line, "x-signature: %s", sig);
            h = curl_slist_append(h, line);
        }
    }
    h = curl_slist_append(h, "Expect:");   // no 100-continue round trip
    f->headers = h;
    CURL *e = f->easy;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)r->body_len);
    curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, r->body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, f->headers);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_body);
    int64_t timeout_ms = r->timeout_ms > 0 ? r->timeout_ms : self->cfg.timeout_ms;
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms < 5000 ? timeout_ms : 5000));
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, f->errbuf);
    return f;
}

// Starts due jobs while there is room. Caller holds mu. Returns the ms until the next due job.
static int64_t start_due(webhooks_t *self, sb_vec_t *flights) {
    int64_t now = sb_mono_ms(), wait = 1000;
    job_t *prev = NULL, *j = self->queue;
    while (j) {
        job_t *next = j->next;
        record_t *r = j->gen == self->gen ? find_seq(self, j->seq) : NULL;
        bool gone = !r;
        bool start = !gone && j->due_ms <= now && (int)flights->len < self->concurrency;
        if (gone || start) {
            if (prev)
                prev->next = next;
            else
                self->queue = next;
            if (self->queue_tail == j) self->queue_tail = prev;
            j->next = NULL;
            flight_t *f = gone ? NULL : flight_new(self, j, r);
            if (f && sb_vec_push(flights, f) == 0) {
                if (curl_multi_add_handle(self->multi, f->easy) != CURLM_OK) {
                    flights->len--;
                    f->job = NULL;
                    flight_free(f);
                    f = NULL;
                }
            } else if (f) {
                f->job = NULL;
                flight_free(f);
                f = NULL;
            }
            if (!f) {
                if (r) {
                    r->queued--;
                    r->failed++;
                    snprintf(r->last_error, sizeof r->last_error, "could not start the request");
                }
                free(j);
            }
        } else {
            if (j->due_ms > now && j->due_ms - now < wait) wait = j->due_ms - now;
            if (j->due_ms <= now) wait = 10;   // due but no room: look again soon
            prev = j;
        }
        j = next;
    }
    return wait;
}

// Delay before retry number `n` (1, 2, …); past the configured list, its last delay repeats.
static int64_t retry_delay_ms(const webhooks_t *self, int n) {
    if (self->cfg.n_retry == 0) return 1000;   // an event with its own retries under --webhook-retry-ms none
    size_t i = (size_t)n - 1 < self->cfg.n_retry ? (size_t)n - 1 : self->cfg.n_retry - 1;
    return self->cfg.retry_ms[i];
}

static void finish(webhooks_t *self, flight_t *f, CURLcode res) {
    long status = 0;
    if (res == CURLE_OK) curl_easy_getinfo(f->easy, CURLINFO_RESPONSE_CODE, &status);
    int64_t ms = sb_mono_ms() - f->started_ms;
    bool ok = status >= 200 && status < 300;
    job_t *job = f->job;
    f->job = NULL;
    const char *outcome = "stale";
    pthread_mutex_lock(&self->mu);
    record_t *r = job->gen == self->gen ? find_seq(self, job->seq) : NULL;
    job->attempts++;
    if (r) {
        r->attempts++;
        r->last_status = status;
        if (res != CURLE_OK)
            snprintf(r->last_error, sizeof r->last_error, "%.95s", f->errbuf[0] ? f->errbuf : curl_easy_strerror(res));
        else if (!ok)
            snprintf(r->last_error, sizeof r->last_error, "HTTP %ld", status);
        else
            r->last_error[0] = '\0';
        if (ok) {
            r->delivered++;
            r->queued--;
            outcome = "delivered";
        } else if ((size_t)job->attempts <= r->max_retries) {
            job->due_ms = sb_mono_ms() + retry_delay_ms(self, job->attempts);
            requeue(self, job);
            job = NULL;
            outcome = "retry";
        } else {
            r->failed++;
            r->queued--;
            outcome = "gave_up";
        }
    }
    pthread_mutex_unlock(&self->mu);
    log_info(&self->cfg.log, "webhook_delivery", "id=%s type=%s status=%ld ms=%lld outcome=%s%s%s", f->id,
             f->type, status, (long long)ms, outcome, res != CURLE_OK ? " error=" : "",
             res != CURLE_OK ? curl_easy_strerror(res) : "");
    free(job);
}

static void *delivery_thread(void *arg) {
    webhooks_t *self = arg;
    sb_vec_t flights = {0};   // flight_t*, owned by this thread
    for (;;) {
        pthread_mutex_lock(&self->mu);
        bool stop = self->stop;
        int64_t wait = stop ? 0 : start_due(self, &flights);
        pthread_mutex_unlock(&self->mu);
        if (stop) break;
        int running = 0;
        curl_multi_perform(self->multi, &running);
        CURLMsg *msg;
        int left = 0;
        while ((msg = curl_multi_info_read(self->multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            CURL *easy = msg->easy_handle;
            CURLcode res = msg->data.result;
            for (size_t i = 0; i < flights.len; i++) {
                flight_t *f = flights.items[i];
                if (f->easy != easy) continue;
                sb_vec_remove(&flights, i);
                curl_multi_remove_handle(self->multi, easy);
                finish(self, f, res);
                flight_free(f);
                break;
            }
        }
        if (wait < 1) wait = 1;
        curl_multi_poll(self->multi, NULL, 0, (int)wait, NULL);
    }
    for (size_t i = 0; i < flights.len; i++) {   // abandon what is still in flight
        flight_t *f = flights.items[i];
        curl_multi_remove_handle(self->multi, f->easy);
        flight_free(f);
    }
    sb_vec_clear(&flights, NULL);
    return NULL;
}

// ---- API (lws service thread) --------------------------------------------------------------------
webhooks_t *webhooks_new(const webhooks_config_t *cfg) {
    webhooks_t *self = calloc(1, sizeof *self);
    if (!self) return NULL;
    self->cfg = *cfg;
    if (self->cfg.n_retry > WEBHOOKS_MAX_RETRIES) self->cfg.n_retry = WEBHOOKS_MAX_RETRIES;
    if (self->cfg.concurrency < 1) self->cfg.concurrency = 1;
    if (self->cfg.timeout_ms < 100) self->cfg.timeout_ms = 100;
    self->concurrency = self->cfg.concurrency;
    self->multi = curl_multi_init();
    if (!self->multi || pthread_mutex_init(&self->mu, NULL) != 0) {
        if (self->multi) curl_multi_cleanup(self->multi);
        free(self);
        return NULL;
    }
    if (pthread_create(&self->thread, NULL, delivery_thread, self) != 0) {
        pthread_mutex_destroy(&self->mu);
        curl_multi_cleanup(self->multi);
        free(self);
        return NULL;
    }
    return self;
}

void webhooks_destroy(webhooks_t **self_p) {
    webhooks_t *self = *self_p;
    if (!self) return;
    pthread_mutex_lock(&self->mu);
    self->stop = true;
    pthread_mutex_unlock(&self->mu);
    curl_multi_wakeup(self->multi);
    pthread_join(self->thread, NULL);
    curl_multi_cleanup(self->multi);
    free_queue(self);
    sb_vec_clear(&self->records, record_free);
    pthread_mutex_destroy(&self->mu);
    free(self);
    *self_p = NULL;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

void webhooks_emit(webhooks_t *self, const webhook_event_t *ev) {
    record_t *r = calloc(1, sizeof *r);
    if (!r) return;
    r->id = strdup(ev->id);
    r->provider = strdup(ev->provider);
    r->type = strdup(ev->type);
    r->url = ev->url && *ev->url ? strdup(ev->url) : NULL;
    r->secret = dup_or_null(ev->stripe_secret);
    r->hmac_secret = dup_or_null(ev->hmac_secret);
    r->body = malloc(ev->body_len + 1);
    r->max_retries = ev->own_retries ? (size_t)(ev->max_retries > 0 ? ev->max_retries : 0) : self->cfg.n_retry;
    r->timeout_ms = ev->timeout_ms;
    sb_buf_t hb = {0};
    for (size_t i = 0; ev->headers && ev->headers[i]; i++) {
        if (strpbrk(ev->headers[i], "\r\n")) continue;   // never let a value split the request
        if (hb.len) sb_buf_puts(&hb, "\n");
        sb_buf_puts(&hb, ev->headers[i]);
    }
    bool headers_failed = hb.failed;
    r->headers = hb.len ? sb_buf_take(&hb, NULL) : NULL;
    sb_buf_free(&hb);
    if (!r->id || !r->provider || !r->type || !r->body || (ev->url && *ev->url && !r->url) ||
        (ev->stripe_secret && !r->secret) || (ev->hmac_secret && !r->hmac_secret) || headers_failed) {
        record_free(r);
        log_error(&self->cfg.log, "webhook_lost", "reason=out_of_memory");
        return;
    }
    memcpy(r->body, ev->body, ev->body_len);
    r->body[ev->body_len] = '\0';
    r->body_len = ev->body_len;
    r->created_s = sb_now_s();
    const char *fate = "queued";
    pthread_mutex_lock(&self->mu);
    r->seq = ++self->next_seq;
    if (self->records.len >= MAX_RECORDS) {   // forget the oldest; its queued jobs are skipped
        record_free(self->records.items[0]);
        sb_vec_remove(&self->records, 0);
    }
    if (sb_vec_push(&self->records, r) != 0) {
        pthread_mutex_unlock(&self->mu);
        record_free(r);
        return;
    }
    if (!r->url) {
        fate = "no_url";
    } else if (self->mode == MODE_DROP) {
        r->dropped = true;
        fate = "dropped";
    } else if (self->mode == MODE_HOLD) {
        r->held = true;
        fate = "held";
    } else if (enqueue(self, r, sb_mono_ms()) != 0) {
        fate = "lost";
    }
    pthread_mutex_unlock(&self->mu);
    log_info(&self->cfg.log, "webhook_event", "provider=%s id=%s type=%s fate=%s", ev->provider, ev->id,
             ev->type, fate);
    curl_multi_wakeup(self->multi);
}

int webhooks_set_mode(webhooks_t *self, const char *mode, int concurrency) {
    wh_mode_t m;
    if (!mode)
        m = (wh_mode_t)-1;
    else if (strcmp(mode, "normal") == 0)
        m = MODE_NORMAL;
    else if (strcmp(mode, "hold") == 0)
        m = MODE_HOLD;
    else if (strcmp(mode, "drop") == 0)
        m = MODE_DROP;
    else
        return -1;
    pthread_mutex_lock(&self->mu);
    if (mode) self->mode = m;
    if (concurrency > 0) self->concurrency = concurrency;
    pthread_mutex_unlock(&self->mu);
    curl_multi_wakeup(self->multi);
    return 0;
}

int webhooks_release(webhooks_t *self, const char *order, int duplicates, size_t *released) {
    bool reverse = false, shuffle = false;
    if (!order || strcmp(order, "fifo") == 0) {
    } else if (strcmp(order, "reverse") == 0) {
        reverse = true;
    } else if (strcmp(order, "shuffle") == 0) {
        shuffle = true;
    } else {
        return -1;
    }
    if (duplicates < 1 || duplicates > 1000) return -1;
    pthread_mutex_lock(&self->mu);
    sb_vec_t held = {0}, copies = {0};
    for (size_t i = 0; i < self->records.len; i++) {
        record_t *r = self->records.items[i];
        if (r->held) sb_vec_push(&held, r);
    }
    if (reverse)
        for (size_t i = 0; i < held.len / 2; i++) {
            void *t = held.items[i];
            held.items[i] = held.items[held.len - 1 - i];
            held.items[held.len - 1 - i] = t;
        }
    for (int d = 0; d < duplicates; d++)
        for (size_t i = 0; i < held.len; i++) sb_vec_push(&copies, held.items[i]);
    if (shuffle)   // Fisher-Yates with OpenSSL randomness
        for (size_t i = copies.len; i > 1; i--) {
            uint32_t rnd = 0;
            util_random_bytes(&rnd, sizeof rnd);
            size_t k = rnd % i;
            void *t = copies.items[i - 1];
            copies.items[i - 1] = copies.items[k];
            copies.items[k] = t;
        }
    int64_t now = sb_mono_ms();
    for (size_t i = 0; i < copies.len; i++) enqueue(self, copies.items[i], now);
    for (size_t i = 0; i < held.len; i++) ((record_t *)held.items[i])->held = false;
    if (released) *released = copies.len;
    pthread_mutex_unlock(&self->mu);
    sb_vec_clear(&held, NULL);
    sb_vec_clear(&copies, NULL);
    curl_multi_wakeup(self->multi);
    return 0;
}

int webhooks_redeliver(webhooks_t *self, const char *id, int times) {
    if (times < 1 || times > 1000) return -1;
    int rc = -1;
    pthread_mutex_lock(&self->mu);
    for (size_t i = self->records.len; i-- > 0;) {
        record_t *r = self->records.items[i];
        if (strcmp(r->id, id) != 0) continue;
        if (r->url) {
            int64_t now = sb_mono_ms();
            for (int k = 0; k < times; k++) enqueue(self, r, now);
            rc = 0;
        }
        break;
    }
    pthread_mutex_unlock(&self->mu);
    curl_multi_wakeup(self->multi);
    return rc;
}

static const char *record_state(const record_t *r) {
    if (r->held) return "held";
    if (r->queued > 0) return "pending";
    if (r->delivered > 0) return "delivered";
    if (r->dropped) return "dropped";
    if (!r->url) return "no_url";
    if (r->failed > 0) return "failed";
    return "pending";
}

json_t *webhooks_list(webhooks_t *self, const char *provider, const char *type) {
    json_t *events = json_array();
    static const char *const mode_names[] = {"normal", "hold", "drop"};
    pthread_mutex_lock(&self->mu);
    const char *mode = mode_names[self->mode];
    int concurrency = self->concurrency;
    for (size_t i = 0; events && i < self->records.len; i++) {
        const record_t *r = self->records.items[i];
        if (provider && *provider && strcmp(provider, r->provider) != 0) continue;
        if (type && *type && strcmp(type, r->type) != 0) continue;
        json_array_append_new(
            events, json_pack("{s:I,s:s,s:s,s:s,s:s?,s:s,s:i,s:i,s:i,s:i,s:s,s:I,s:s%}", "seq", (json_int_t)r->seq,
                              "id", r->id, "provider", r->provider, "type", r->type, "url", r->url, "state",
                              record_state(r), "attempts", r->attempts, "delivered", r->delivered, "failed",
                              r->failed, "last_status", (int)r->last_status, "last_error", r->last_error,
                              "created", (json_int_t)r->created_s, "body", r->body, r->body_len));
    }
    pthread_mutex_unlock(&self->mu);
    return json_pack("{s:s,s:i,s:o}", "mode", mode, "concurrency", concurrency, "events", events ? events : json_array());
}

void webhooks_reset(webhooks_t *self) {
    pthread_mutex_lock(&self->mu);
    self->gen++;
    free_queue(self);
    sb_vec_clear(&self->records, record_free);
    self->mode = MODE_NORMAL;
    self->concurrency = self->cfg.concurrency;
    pthread_mutex_unlock(&self->mu);
    curl_multi_wakeup(self->multi);
}
