-- 0001_schema.sql — the whole SweetyOnCall schema (CONTRACT.md, "Database").
--
-- Applied by storage/migrate.c inside one transaction, under an advisory lock, and never edited
-- once released: a later change is a new file (0002_...). The binary refuses to start against a
-- database where this file was applied with different contents (checksum).
--
-- Design notes
-- * Booking status history lives in booking_events (booking_id, seq, status, at), one row per
--   change. It is written by triggers on bookings, not by application code, so no code path can
--   change a status without recording it: INSERT sets status_seq = 1, every UPDATE that changes
--   status bumps status_seq by one, and the AFTER trigger copies (id, status_seq, status) into
--   booking_events and NOTIFYs channel sweety_booking_status with
--   {"booking_id","seq","status","at"} (delivered at commit, to every sweetyd sharing the
--   database). status_seq is owned by the trigger: values written by callers are ignored.
-- * The same BEFORE trigger enforces CONTRACT's transition rule: a final status (completed,
--   failed, cancelled, payment_failed) never changes, and statuses never move backwards except
--   initiating/calling -> queued (a retry). A refused change raises SQLSTATE SW001.
-- * Changes an operator makes to plans, accounts and agents NOTIFY channel sweety_config (payload:
--   the table name) so running daemons reload without polling for it; counters
--   (active_calls, held_until) do not notify.
-- * Personal data (users.name/phone/email, bookings.message, recordings, transcripts in
--   call_events.details) is readable by sweety_app only; sweety_reporting gets column grants
--   that leave it out. Provider API keys are stored only as ciphertext (api_key_enc + nonce).
-- * call_events is partitioned by month on event_time (UTC months), with a default partition so
--   an insert never fails; sweety_ensure_call_event_partitions(n) creates the current month and n
--   ahead, moving any rows that had landed in the default partition.
-- * Row-level security is enabled on every table, partitions included. The table owner (the
--   migrator, and the demo's daemon) bypasses it; sweety_app and sweety_reporting get policies.

-- Roles are cluster-wide: two databases migrating at once may both try to create them.
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['sweety_app', 'sweety_reporting'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;   -- created meanwhile by another database's migration
            END;
        END IF;
    END LOOP;
END
$roles$;

-- ---------------------------------------------------------------------------------------------
-- Types

CREATE TYPE plan_key AS ENUM ('free_trial', 'standard', 'extended', 'premium');

CREATE TYPE booking_status AS ENUM (
    'pending', 'pending_payment', 'payment_failed', 'confirmed', 'queued',
    'initiating', 'calling', 'completed', 'failed', 'cancelled');

CREATE TYPE payment_method AS ENUM ('stripe', 'cryptomus', 'none');

CREATE TYPE payment_provider AS ENUM ('stripe', 'cryptomus');

CREATE TYPE payment_status AS ENUM (
    'pending', 'paid', 'failed', 'expired', 'cancelled',
    'refund_pending', 'refunded', 'refund_failed', 'refund_required');

CREATE TYPE queue_status AS ENUM ('queued', 'claimed', 'dialing', 'active', 'done', 'failed', 'cancelled');

CREATE TYPE webhook_provider AS ENUM ('stripe', 'cryptomus', 'vapi');

CREATE TYPE webhook_outcome AS ENUM ('received', 'applied', 'ignored', 'unknown_target');

CREATE TYPE idempotency_status AS ENUM ('in_progress', 'done');

-- ---------------------------------------------------------------------------------------------
-- Shared trigger functions

CREATE FUNCTION sweety_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE FUNCTION sweety_notify_config() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('sweety_config', TG_TABLE_NAME);
    RETURN NULL;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- users: one row per phone number.

CREATE TABLE users (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    phone           text NOT NULL,
    name            text NOT NULL,
    email           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_free_trial timestamptz,
    CONSTRAINT users_phone_key UNIQUE (phone),
    CONSTRAINT users_phone_e164 CHECK (phone ~ '^\+[1-9][0-9]{7,14}$'),
    CONSTRAINT users_name_length CHECK (char_length(name) BETWEEN 1 AND 100),
    CONSTRAINT users_email_length CHECK (email IS NULL OR char_length(email) BETWEEN 3 AND 254)
);

CREATE TRIGGER users_touch BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION sweety_touch_updated_at();

-- ---------------------------------------------------------------------------------------------
-- plans: the four offers. priority orders the call queue (premium first).

CREATE TABLE plans (
    key               plan_key PRIMARY KEY,
    name              text NOT NULL,
    price_cents       integer NOT NULL,
    currency          text NOT NULL DEFAULT 'usd',
    duration_seconds  integer NOT NULL,
    vapi_assistant_id text,
    priority          integer NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT plans_name_length CHECK (char_length(name) BETWEEN 1 AND 100),
    CONSTRAINT plans_price_nonnegative CHECK (price_cents >= 0),
    -- the free trial is free, and a paid plan must cost something
    CONSTRAINT plans_price_matches_key CHECK ((key = 'free_trial') = (price_cents = 0)),
    CONSTRAINT plans_currency_code CHECK (currency ~ '^[a-z]{3}$'),
    -- VAPI accepts maxDurationSeconds from 10 to 43200
    CONSTRAINT plans_duration_range CHECK (duration_seconds BETWEEN 10 AND 43200),
    CONSTRAINT plans_assistant_id_nonempty CHECK (vapi_assistant_id IS NULL OR vapi_assistant_id <> '')
);

CREATE TRIGGER plans_touch BEFORE UPDATE ON plans
    FOR EACH ROW EXECUTE FUNCTION sweety_touch_updated_at();
CREATE TRIGGER plans_notify AFTER INSERT OR UPDATE OR DELETE ON plans
    FOR EACH STATEMENT EXECUTE FUNCTION sweety_notify_config();

INSERT INTO plans (key, name, price_cents, currency, duration_seconds, priority) VALUES
    ('free_trial', 'Free trial',    0, 'usd',  120, 10),
    ('standard',   'Standard',   1500, 'usd',  600, 20),
    ('extended',   'Extended',   2900, 'usd', 1200, 30),
    ('premium',    'Premium',    4900, 'usd', 1800, 40)
ON CONFLICT (key) DO NOTHING;

-- ---------------------------------------------------------------------------------------------
-- bookings and their status history

CREATE TABLE bookings (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    plan            plan_key NOT NULL REFERENCES plans (key) ON DELETE RESTRICT,
    status          booking_status NOT NULL DEFAULT 'pending',
    payment_method  payment_method NOT NULL,
    message         text,
    scheduled_for   timestamptz,
    status_seq      integer NOT NULL DEFAULT 1,
    vapi_call_id    text,
    call_duration_s integer,
    call_cost       numeric(12, 4),
    ended_reason    text,
    recording_url   text,
    error_message   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bookings_message_length CHECK (message IS NULL OR char_length(message) <= 500),
    CONSTRAINT bookings_free_trial_unpaid CHECK ((plan = 'free_trial') = (payment_method = 'none')),
    CONSTRAINT bookings_status_seq_positive CHECK (status_seq >= 1),
    CONSTRAINT bookings_call_duration_nonnegative CHECK (call_duration_s IS NULL OR call_duration_s >= 0),
    CONSTRAINT bookings_call_cost_nonnegative CHECK (call_cost IS NULL OR call_cost >= 0)
);

CREATE INDEX bookings_user_id_idx ON bookings (user_id, created_at);
CREATE INDEX bookings_created_at_idx ON bookings (created_at);
CREATE INDEX bookings_vapi_call_id_idx ON bookings (vapi_call_id) WHERE vapi_call_id IS NOT NULL;
CREATE INDEX bookings_open_status_idx ON bookings (status)
    WHERE status NOT IN ('completed', 'failed', 'cancelled', 'payment_failed');

CREATE TABLE booking_events (
    booking_id uuid NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
    seq        integer NOT NULL,
    status     booking_status NOT NULL,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT booking_events_pkey PRIMARY KEY (booking_id, seq),
    CONSTRAINT booking_events_seq_positive CHECK (seq >= 1)
);

-- 0 .. 5 along the normal paths; every final status ranks 9.
CREATE FUNCTION sweety_booking_status_rank(s booking_status) RETURNS integer
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE s
        WHEN 'pending' THEN 0
        WHEN 'pending_payment' THEN 1
        WHEN 'confirmed' THEN 2
        WHEN 'queued' THEN 3
        WHEN 'initiating' THEN 4
        WHEN 'calling' THEN 5
        ELSE 9
    END
$$;

CREATE FUNCTION sweety_bookings_before() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        NEW.status_seq := 1;
        RETURN NEW;
    END IF;
    NEW.updated_at := now();
    IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
        NEW.status_seq := OLD.status_seq;
        RETURN NEW;
    END IF;
    IF OLD.status IN ('completed', 'failed', 'cancelled', 'payment_failed') THEN
        RAISE EXCEPTION 'booking % is %, a final status', OLD.id, OLD.status
            USING ERRCODE = 'SW001';
    END IF;
    IF sweety_booking_status_rank(NEW.status) <= sweety_booking_status_rank(OLD.status)
       AND NOT (NEW.status = 'queued' AND OLD.status IN ('initiating', 'calling')) THEN
        RAISE EXCEPTION 'booking % cannot move from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'SW001';
    END IF;
    NEW.status_seq := OLD.status_seq + 1;
    RETURN NEW;
END
$$;

CREATE FUNCTION sweety_bookings_after() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_at timestamptz;
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NULL;
    END IF;
    INSERT INTO booking_events (booking_id, seq, status)
        VALUES (NEW.id, NEW.status_seq, NEW.status)
        RETURNING at INTO v_at;
    PERFORM pg_notify('sweety_booking_status', json_build_object(
        'booking_id', NEW.id, 'seq', NEW.status_seq, 'status', NEW.status,
        'at', to_char(v_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER bookings_before BEFORE INSERT OR UPDATE ON bookings
    FOR EACH ROW EXECUTE FUNCTION sweety_bookings_before();
CREATE TRIGGER bookings_after AFTER INSERT OR UPDATE OF status ON bookings
    FOR EACH ROW EXECUTE FUNCTION sweety_bookings_after();

-- ---------------------------------------------------------------------------------------------
-- payments: at most one per booking.
--   session_id        Stripe Checkout Session id (cs_...) or, for Cryptomus, our order_id
--   payment_intent_id Stripe PaymentIntent (pi_...), known once the session completed
--   invoice_uuid      Cryptomus invoice uuid
--   refund_id         Stripe refund (re_...)

CREATE TABLE payments (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    booking_id        uuid NOT NULL REFERENCES bookings (id) ON DELETE RESTRICT,
    provider          payment_provider NOT NULL,
    amount_cents      integer NOT NULL,
    currency          text NOT NULL,
    status            payment_status NOT NULL DEFAULT 'pending',
    provider_status   text,
    session_id        text,
    checkout_url      text,
    payment_intent_id text,
    invoice_uuid      text,
    refund_id         text,
    error_message     text,
    paid_at           timestamptz,
    refunded_at       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT payments_booking_id_key UNIQUE (booking_id),
    CONSTRAINT payments_provider_session_key UNIQUE (provider, session_id),
    CONSTRAINT payments_amount_nonnegative CHECK (amount_cents >= 0),
    CONSTRAINT payments_currency_code CHECK (currency ~ '^[a-z]{3}$')
);

CREATE UNIQUE INDEX payments_invoice_uuid_key ON payments (invoice_uuid) WHERE invoice_uuid IS NOT NULL;
CREATE INDEX payments_payment_intent_idx ON payments (payment_intent_id) WHERE payment_intent_id IS NOT NULL;
CREATE INDEX payments_refund_id_idx ON payments (refund_id) WHERE refund_id IS NOT NULL;
CREATE INDEX payments_open_status_idx ON payments (status)
    WHERE status IN ('pending', 'refund_pending', 'refund_required');

CREATE TRIGGER payments_touch BEFORE UPDATE ON payments
    FOR EACH ROW EXECUTE FUNCTION sweety_touch_updated_at();

-- ---------------------------------------------------------------------------------------------
-- VAPI accounts and agents. The API key is stored only encrypted (ciphertext with its
-- authentication tag, and the nonce used), under security.master_key.

CREATE TABLE vapi_accounts (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name            text NOT NULL,
    api_key_enc     bytea NOT NULL,
    api_key_nonce   bytea NOT NULL,
    phone_number_id text NOT NULL,
    max_concurrent  integer NOT NULL,
    active_calls    integer NOT NULL DEFAULT 0,
    enabled         boolean NOT NULL DEFAULT true,
    held_until      timestamptz,
    hold_reason     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT vapi_accounts_name_length CHECK (char_length(name) BETWEEN 1 AND 100),
    CONSTRAINT vapi_accounts_api_key_present CHECK (octet_length(api_key_enc) > 0 AND octet_length(api_key_nonce) > 0),
    CONSTRAINT vapi_accounts_phone_number_id_nonempty CHECK (phone_number_id <> ''),
    CONSTRAINT vapi_accounts_max_concurrent_nonnegative CHECK (max_concurrent >= 0),
    CONSTRAINT vapi_accounts_active_calls_range CHECK (active_calls >= 0 AND active_calls <= max_concurrent)
);

CREATE TRIGGER vapi_accounts_touch BEFORE UPDATE ON vapi_accounts
    FOR EACH ROW EXECUTE FUNCTION sweety_touch_updated_at();
CREATE TRIGGER vapi_accounts_notify
    AFTER INSERT OR DELETE OR UPDATE OF name, api_key_enc, api_key_nonce, phone_number_id, max_concurrent, enabled
    ON vapi_accounts FOR EACH STATEMENT EXECUTE FUNCTION sweety_notify_config();

CREATE TABLE vapi_agents (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    account_id     uuid NOT NULL REFERENCES vapi_accounts (id) ON DELETE RESTRICT,
    plan           plan_key NOT NULL REFERENCES plans (key) ON DELETE RESTRICT,
    assistant_id   text,   -- NULL: the plan's vapi_assistant_id
    max_concurrent integer NOT NULL,
    active_calls   integer NOT NULL DEFAULT 0,
    priority       integer NOT NULL DEFAULT 0,
    enabled        boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT vapi_agents_assistant_id_nonempty CHECK (assistant_id IS NULL OR assistant_id <> ''),
    CONSTRAINT vapi_agents_max_concurrent_nonnegative CHECK (max_concurrent >= 0),
    CONSTRAINT vapi_agents_active_calls_range CHECK (active_calls >= 0 AND active_calls <= max_concurrent)
);

CREATE INDEX vapi_agents_account_id_idx ON vapi_agents (account_id);
CREATE INDEX vapi_agents_pick_idx ON vapi_agents (plan, priority DESC) WHERE enabled;

CREATE TRIGGER vapi_agents_touch BEFORE UPDATE ON vapi_agents
    FOR EACH ROW EXECUTE FUNCTION sweety_touch_updated_at();
CREATE TRIGGER vapi_agents_notify
    AFTER INSERT OR DELETE OR UPDATE OF account_id, plan, assistant_id, max_concurrent, priority, enabled
    ON vapi_agents FOR EACH STATEMENT EXECUTE FUNCTION sweety_notify_config();

-- ---------------------------------------------------------------------------------------------
-- call_queue: one entry per booking that needs a call. The scheduler claims entries with
--   WHERE status = 'queued' AND next_attempt_at <= now() ORDER BY priority DESC, created_at
--   FOR UPDATE SKIP LOCKED
-- and holds them with a lease (lease_owner, lease_until) while it dials.

CREATE TABLE call_queue (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    booking_id      uuid NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
    plan            plan_key NOT NULL REFERENCES plans (key) ON DELETE RESTRICT,
    priority        integer NOT NULL,
    status          queue_status NOT NULL DEFAULT 'queued',
    attempt         integer NOT NULL DEFAULT 0,
    max_retries     integer NOT NULL,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_owner     text,
    lease_until     timestamptz,
    agent_id        uuid REFERENCES vapi_agents (id) ON DELETE SET NULL,
    account_id      uuid REFERENCES vapi_accounts (id) ON DELETE SET NULL,
    vapi_call_id    text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT call_queue_booking_id_key UNIQUE (booking_id),
    CONSTRAINT call_queue_attempt_nonnegative CHECK (attempt >= 0),
    CONSTRAINT call_queue_max_retries_nonnegative CHECK (max_retries >= 0),
    CONSTRAINT call_queue_lease_complete CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);

CREATE INDEX call_queue_claim_idx ON call_queue (priority DESC, created_at, next_attempt_at)
    WHERE status = 'queued';
CREATE INDEX call_queue_lease_idx ON call_queue (lease_until)
    WHERE status IN ('claimed', 'dialing', 'active');
CREATE INDEX call_queue_agent_id_idx ON call_queue (agent_id) WHERE agent_id IS NOT NULL;
CREATE INDEX call_queue_account_id_idx ON call_queue (account_id) WHERE account_id IS NOT NULL;

CREATE TRIGGER call_queue_touch BEFORE UPDATE ON call_queue
    FOR EACH ROW EXECUTE FUNCTION sweety_touch_updated_at();

-- ---------------------------------------------------------------------------------------------
-- active_calls: calls assigned to an agent and not yet ended. started_at is the assignment
-- (initiating); calling_at starts the duration monitor's clock.

CREATE TABLE active_calls (
    booking_id     uuid PRIMARY KEY REFERENCES bookings (id) ON DELETE CASCADE,
    agent_id       uuid NOT NULL REFERENCES vapi_agents (id) ON DELETE RESTRICT,
    account_id     uuid NOT NULL REFERENCES vapi_accounts (id) ON DELETE RESTRICT,
    vapi_call_id   text,
    control_url    text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    calling_at     timestamptz,
    last_event_at  timestamptz,
    max_duration_s integer NOT NULL,
    CONSTRAINT active_calls_vapi_call_id_key UNIQUE (vapi_call_id),
    CONSTRAINT active_calls_max_duration_positive CHECK (max_duration_s > 0)
);

CREATE INDEX active_calls_agent_id_idx ON active_calls (agent_id);
CREATE INDEX active_calls_account_id_idx ON active_calls (account_id);
CREATE INDEX active_calls_calling_at_idx ON active_calls (calling_at) WHERE calling_at IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- call_events: everything VAPI told us about a call, partitioned by UTC month.

CREATE SEQUENCE call_events_id_seq AS bigint;

CREATE TABLE call_events (
    id           bigint NOT NULL DEFAULT nextval('call_events_id_seq'),
    booking_id   uuid NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
    vapi_call_id text,
    event_time   timestamptz NOT NULL DEFAULT now(),
    event_type   text NOT NULL,
    status       text,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT call_events_pkey PRIMARY KEY (id, event_time),
    CONSTRAINT call_events_event_type_nonempty CHECK (event_type <> '')
) PARTITION BY RANGE (event_time);

ALTER SEQUENCE call_events_id_seq OWNED BY call_events.id;

CREATE INDEX call_events_booking_idx ON call_events (booking_id, event_time);
CREATE INDEX call_events_vapi_call_idx ON call_events (vapi_call_id, event_time) WHERE vapi_call_id IS NOT NULL;

CREATE TABLE call_events_default PARTITION OF call_events DEFAULT;
ALTER TABLE call_events_default ENABLE ROW LEVEL SECURITY;

-- Creates the partitions for the current UTC month and `months_ahead` months after it, where
-- missing. Rows that had gone to the default partition for such a month are moved into the new
-- partition. Safe to call concurrently (transaction-scoped advisory lock) and from sweety_app
-- (SECURITY DEFINER: runs as the schema owner). Returns the number of partitions created.
CREATE FUNCTION sweety_ensure_call_event_partitions(months_ahead integer DEFAULT 2) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
    v_schema  text;
    v_month   timestamp;
    v_lo      timestamptz;
    v_hi      timestamptz;
    v_part    text;
    v_created integer := 0;
    v_moved   bigint;
BEGIN
    IF months_ahead IS NULL OR months_ahead < 0 OR months_ahead > 120 THEN
        RAISE EXCEPTION 'months_ahead must be between 0 and 120, not %', months_ahead
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- 'SWEETYCE' as a 64-bit key: one partition maker at a time per database.
    PERFORM pg_advisory_xact_lock(6005344792192041797);
    SELECT n.nspname INTO v_schema
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = 'call_events'::regclass;
    FOR i IN 0 .. months_ahead LOOP
        v_month := date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i);
        v_lo := v_month AT TIME ZONE 'UTC';
        v_hi := (v_month + interval '1 month') AT TIME ZONE 'UTC';
        v_part := 'call_events_' || to_char(v_month, 'YYYYMM');
        CONTINUE WHEN EXISTS (
            SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = v_schema AND c.relname = v_part);
        IF EXISTS (SELECT 1 FROM call_events_default WHERE event_time >= v_lo AND event_time < v_hi) THEN
            EXECUTE format('CREATE TABLE %I.%I (LIKE %I.call_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                           v_schema, v_part, v_schema);
            EXECUTE format('WITH moved AS (DELETE FROM %I.call_events_default'
                           ' WHERE event_time >= $1 AND event_time < $2 RETURNING *)'
                           ' INSERT INTO %I.%I SELECT * FROM moved', v_schema, v_schema, v_part)
                USING v_lo, v_hi;
            GET DIAGNOSTICS v_moved = ROW_COUNT;
            EXECUTE format('ALTER TABLE %I.call_events ATTACH PARTITION %I.%I FOR VALUES FROM (%L) TO (%L)',
                           v_schema, v_schema, v_part, v_lo, v_hi);
            RAISE NOTICE 'moved % call_events rows from the default partition into %', v_moved, v_part;
        ELSE
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.call_events FOR VALUES FROM (%L) TO (%L)',
                           v_schema, v_part, v_schema, v_lo, v_hi);
        END IF;
        -- No policies on partitions: they are reached through call_events only.
        EXECUTE format('ALTER TABLE %I.%I ENABLE ROW LEVEL SECURITY', v_schema, v_part);
        v_created := v_created + 1;
    END LOOP;
    RETURN v_created;
END
$$;

-- A SECURITY DEFINER function must not resolve names through a search path the caller controls.
DO $fn$
BEGIN
    EXECUTE format('ALTER FUNCTION sweety_ensure_call_event_partitions(integer) SET search_path = %I, pg_temp',
                   current_schema());
END
$fn$;

SELECT sweety_ensure_call_event_partitions(2);

-- ---------------------------------------------------------------------------------------------
-- webhook_events: one row per provider event, the idempotency record. event_id is the provider's
-- key: Stripe event id; Cryptomus "<invoice uuid>:<status>"; VAPI "<call id>:<type>[:<status>]".
-- Rejected requests (bad signature, rate limited) are never stored.

CREATE TABLE webhook_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider    webhook_provider NOT NULL,
    event_id    text NOT NULL,
    type        text NOT NULL,
    booking_id  uuid REFERENCES bookings (id) ON DELETE SET NULL,
    outcome     webhook_outcome NOT NULL DEFAULT 'received',
    received_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_events_provider_event_key UNIQUE (provider, event_id),
    CONSTRAINT webhook_events_event_id_length CHECK (char_length(event_id) BETWEEN 1 AND 255)
);

CREATE INDEX webhook_events_received_at_idx ON webhook_events (received_at);
CREATE INDEX webhook_events_booking_id_idx ON webhook_events (booking_id) WHERE booking_id IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- idempotency_keys: POST /api/bookings with an Idempotency-Key header. The first request inserts
-- the key (in_progress), then stores its exact answer (done). Rows older than 24 h are deleted.

CREATE TABLE idempotency_keys (
    key             text PRIMARY KEY,
    request_hash    text NOT NULL,
    status          idempotency_status NOT NULL DEFAULT 'in_progress',
    response_status smallint,
    response_body   bytea,
    booking_id      uuid REFERENCES bookings (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT idempotency_keys_key_length CHECK (char_length(key) BETWEEN 1 AND 255),
    CONSTRAINT idempotency_keys_response_status_range
        CHECK (response_status IS NULL OR response_status BETWEEN 100 AND 599),
    CONSTRAINT idempotency_keys_done_has_response CHECK (
        status = 'in_progress' OR (response_status IS NOT NULL AND response_body IS NOT NULL))
);

CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);

CREATE TRIGGER idempotency_keys_touch BEFORE UPDATE ON idempotency_keys
    FOR EACH ROW EXECUTE FUNCTION sweety_touch_updated_at();

-- ---------------------------------------------------------------------------------------------
-- Row-level security and privileges

DO $rls$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['schema_migrations', 'users', 'plans', 'bookings', 'booking_events',
                             'payments', 'vapi_accounts', 'vapi_agents', 'call_queue',
                             'active_calls', 'call_events', 'webhook_events', 'idempotency_keys'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO sweety_app', t);
        EXECUTE format('CREATE POLICY %I ON %I AS PERMISSIVE FOR ALL TO sweety_app USING (true) WITH CHECK (true)',
                       t || '_app_all', t);
    END LOOP;
    -- The reporting role sees rows of the tables below, but only the columns granted to it.
    FOREACH t IN ARRAY ARRAY['schema_migrations', 'plans', 'bookings', 'booking_events', 'payments',
                             'vapi_accounts', 'vapi_agents', 'call_queue', 'active_calls',
                             'call_events', 'webhook_events'] LOOP
        EXECUTE format('CREATE POLICY %I ON %I AS PERMISSIVE FOR SELECT TO sweety_reporting USING (true)',
                       t || '_reporting_read', t);
    END LOOP;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO sweety_app, sweety_reporting', current_schema());
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO sweety_app', current_schema());
END
$rls$;

-- Not personal: whole tables.
GRANT SELECT ON schema_migrations, plans, booking_events, vapi_agents, webhook_events
    TO sweety_reporting;
-- Personal or secret columns left out: bookings.message, recording_url, error_message, vapi_call_id;
-- payments' provider ids and checkout URL; the encrypted API key; the call control URL (it can end
-- a call); call_events.details (transcripts); call_queue.last_error (provider error text may quote
-- the callee's number). users and idempotency_keys (responses hold status tokens): nothing.
GRANT SELECT (id, booking_id, plan, priority, status, attempt, max_retries, next_attempt_at, lease_owner,
              lease_until, agent_id, account_id, created_at, updated_at)
    ON call_queue TO sweety_reporting;
GRANT SELECT (id, user_id, plan, status, payment_method, scheduled_for, status_seq, call_duration_s,
              call_cost, ended_reason, created_at, updated_at)
    ON bookings TO sweety_reporting;
GRANT SELECT (id, booking_id, provider, amount_cents, currency, status, provider_status, paid_at,
              refunded_at, created_at, updated_at)
    ON payments TO sweety_reporting;
GRANT SELECT (id, name, phone_number_id, max_concurrent, active_calls, enabled, held_until,
              hold_reason, created_at, updated_at)
    ON vapi_accounts TO sweety_reporting;
GRANT SELECT (booking_id, agent_id, account_id, started_at, calling_at, last_event_at, max_duration_s)
    ON active_calls TO sweety_reporting;
GRANT SELECT (id, booking_id, event_time, event_type, status)
    ON call_events TO sweety_reporting;

-- Functions are executable by PUBLIC by default; the partition maker is for the application only.
REVOKE ALL ON FUNCTION sweety_ensure_call_event_partitions(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION sweety_ensure_call_event_partitions(integer) TO sweety_app;
