// storage/migrate.h — versioned schema migrations compiled into the binary.
//
// storage/migrations/NNNN_name.sql files are embedded at build time (storage/embed_migrations.cmake
// generates a C file holding their bytes and SHA-256), so a binary always carries exactly the
// schema it was built for and never reads SQL files at run time.
//
// Adding a migration: a new file with the next number; never edit one that was released (its
// checksum is recorded and checked). No BEGIN/COMMIT inside (the file runs in one transaction),
// nothing that cannot run in a transaction (CREATE INDEX CONCURRENTLY). A new table needs
// ENABLE ROW LEVEL SECURITY, a grant and a policy for sweety_app, and for sweety_reporting only
// non-personal columns (see 0001_schema.sql); a new sequence needs USAGE for sweety_app.
#ifndef SWEETY_MIGRATE_H
#define SWEETY_MIGRATE_H

#include <stddef.h>

#include "common/log.h"
#include "storage/db.h"

// The advisory lock key migrators hold ("SWEETYMG" read as a big-endian 64-bit integer), as SQL text.
#define MIGRATE_LOCK_KEY "6005344792192044359"

typedef struct {
    int version;           // NNNN from the file name, >= 1
    const char *name;      // the rest of the file name, without ".sql"
    const char *sql;       // the file's bytes, NUL-terminated
    size_t sql_len;
    const char *checksum;  // lowercase hex SHA-256 of the file's bytes
} migration_t;

// The embedded migrations, in increasing version order.
const migration_t *migrate_embedded(size_t *count);

// Applies every embedded migration the database lacks, each in its own transaction, while holding
// a session advisory lock so concurrent migrators (other hosts, other processes) wait for each
// other; the one that waited then finds nothing to do. Creates schema_migrations when missing.
// Refuses to apply anything (-1) when an applied migration's checksum differs from the embedded one,
// or when the server is older than PostgreSQL 15. Versions in the database that this binary does
// not know (a newer binary migrated it) are logged and left alone.
// Returns 0 and sets *applied (may be NULL) to the number applied, or -1 with a message in err.
int migrate_apply(db_t *db, const logger_t *lg, int *applied, char *err, size_t errlen);

#endif
