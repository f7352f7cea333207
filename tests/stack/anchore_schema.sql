-- Anchore's object-storage tables, as its SQLAlchemy entities declare them
-- (anchore-engine anchore_engine/db/entities/catalog.py: ObjectStorageMetadata,
-- LegacyArchiveDocument, ObjectStorageRecord; anchore_engine/db/entities/tasks.py:
-- Task, ArchiveMigrationTask). SQLAlchemy String -> varchar, Integer -> integer,
-- BigInteger -> bigint, Boolean -> boolean, LargeBinary -> bytea,
-- DateTime -> timestamp without time zone. created_at / last_updated of the
-- catalog tables are epoch seconds (anchore_now() = int(time.time())).
--
-- Test fixture only: storeshift never creates application tables.

CREATE TABLE archive_metadata (
    bucket             varchar NOT NULL,
    "archiveId"        varchar NOT NULL,
    "userId"           varchar NOT NULL,
    "documentName"     varchar NOT NULL,
    content_url        varchar,
    is_compressed      boolean,
    digest             varchar,
    size               bigint,
    document_metadata  varchar,
    created_at         integer DEFAULT (extract(epoch FROM now())::integer),
    last_updated       integer DEFAULT (extract(epoch FROM now())::integer),
    record_state_key   varchar DEFAULT 'active',
    record_state_val   varchar,
    PRIMARY KEY (bucket, "archiveId", "userId", "documentName")
);

CREATE TABLE archive_document (
    bucket             varchar NOT NULL,
    "archiveId"        varchar NOT NULL,
    "userId"           varchar NOT NULL,
    "documentName"     varchar NOT NULL,
    created_at         integer DEFAULT (extract(epoch FROM now())::integer),
    last_updated       integer DEFAULT (extract(epoch FROM now())::integer),
    record_state_key   varchar DEFAULT 'active',
    record_state_val   varchar,
    jsondata           varchar,
    b64_encoded        boolean DEFAULT false,
    PRIMARY KEY (bucket, "archiveId", "userId", "documentName")
);

CREATE TABLE object_storage (
    "userId"           varchar NOT NULL,
    bucket             varchar NOT NULL,
    key                varchar NOT NULL,
    version            varchar NOT NULL DEFAULT '',
    object_metadata    varchar,
    content            bytea,
    created_at         integer DEFAULT (extract(epoch FROM now())::integer),
    last_updated       integer DEFAULT (extract(epoch FROM now())::integer),
    PRIMARY KEY ("userId", bucket, key, version)
);

CREATE TYPE task_states AS ENUM ('initializing', 'pending', 'running', 'complete', 'failed');

CREATE TABLE tasks (
    id                 serial PRIMARY KEY,
    state              task_states DEFAULT 'initializing',
    last_state         task_states,
    created_at         timestamp without time zone DEFAULT (now() AT TIME ZONE 'utc'),
    started_at         timestamp without time zone,
    ended_at           timestamp without time zone,
    last_updated       timestamp without time zone DEFAULT (now() AT TIME ZONE 'utc'),
    executor_id        varchar,
    type               varchar
);

CREATE TABLE archive_migration_tasks (
    id                            integer PRIMARY KEY REFERENCES tasks (id),
    migrate_from_driver           varchar,
    migrate_to_driver             varchar,
    archive_documents_to_migrate  integer,
    archive_documents_migrated    integer,
    online_migration              boolean
);
