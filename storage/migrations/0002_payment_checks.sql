-- 0002_payment_checks.sql — what the payment queries (storage/bookings.c, storage/payments.c)
-- need beyond 0001_schema.sql.
--
-- * payments.expires_at: when the provider's checkout (Stripe session, Cryptomus invoice) stops
--   accepting money, as the provider told us at creation. Reconciliation and `booking show` use it.
-- * payments.checked_at: when reconciliation last asked the provider about this payment
--   (bookings_pending_payment_older_than stamps it), so a long backlog is checked in turn and two
--   daemons do not check one payment at once.
-- * bookings_unserved_idx: the refund sweep (payments_refunds_due) looks for money held on
--   bookings that will not get their call; such bookings are few, completed ones many.
-- Neither column is personal: both are granted to sweety_reporting like the payment's other times.

ALTER TABLE payments
    ADD COLUMN expires_at timestamptz,
    ADD COLUMN checked_at timestamptz;

CREATE INDEX bookings_unserved_idx ON bookings (updated_at)
    WHERE status IN ('cancelled', 'payment_failed', 'failed');

GRANT SELECT (expires_at, checked_at) ON payments TO sweety_reporting;
