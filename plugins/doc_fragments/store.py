# -*- coding: utf-8 -*-
# Copyright: storeshift.objstore contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # Matches module_utils.module_base.db_argument_spec().
    DOCUMENTATION = r'''
options:
  db_connect:
    description:
      - Connection to the application's PostgreSQL database, as a libpq DSN
        (C(host=... dbname=... user=... password=...)) or a C(postgresql://) URL,
        as C(anchore-manager --db-connect) takes it.
      - Needed by the C(db) and C(db2) drivers and by the C(anchore) layout.
      - When not set, the C(PGHOST), C(PGPORT), C(PGDATABASE), C(PGUSER) and
        C(PGPASSWORD) environment variables are used, as libpq does.
    type: str
requirements:
  - python >= 3.9
  - boto3 (for the C(s3) driver)
  - requests (for the C(rustfs) driver)
  - psycopg2 (for the C(db) and C(db2) drivers and PostgreSQL ledgers)
  - zstandard (for compressed stores)
  - PyYAML (to read application config files)
notes:
  - "A store spec has Anchore's shape: C(storage_driver.name), C(storage_driver.config),
    C(compression.enabled), C(compression.min_size_kbytes). Drivers are C(db), C(db2)
    (PostgreSQL tables of Anchore), C(s3), C(rustfs) (the RustFS HTTP API of the StellaOps
    runbook) and C(localfs)."
  - Instead of a spec, O(ignore:config_file) and O(ignore:section) read the spec
    from an application config file; sections are C(object_store), C(archive),
    C(analysis_archive) (Anchore C(services.catalog.*)) and C(artifact_store)
    (StellaOps C(scanner.artifactStore), YAML or environment file).
  - Secrets (C(secret_key), C(api_key), the DSN password) never appear in results or messages.
'''

    # The store options are written out in full for store, source and dest: ansible-test reads doc
    # fragments as literal strings, so they cannot be generated from one text. They match
    # module_utils.module_base.store_spec_options().
    SINGLE = r'''
options:
  store:
    description:
      - The store, as an Anchore-shape spec, or C(config_file) and C(section).
    type: dict
    required: true
    suboptions:
      storage_driver:
        description: The driver and its configuration, as in Anchore's C(storage_driver) section.
        type: dict
        suboptions:
          name:
            description: C(db), C(db2), C(s3), C(rustfs) or C(localfs).
            type: str
            required: true
          config:
            description:
              - Driver configuration; each driver takes only its own keys.
              - C(s3) takes the keys of Anchore's s3 section plus TLS, addressing and tuning keys.
              - C(rustfs) takes C(endpoint), C(bucket), C(api_key_header), C(api_key), C(timeout_seconds),
                C(validate_certs), C(ca_bundle) and C(prefix).
              - C(localfs) takes C(archive_data_dir). C(db) and C(db2) take nothing (see O(db_connect)).
            type: dict
            suboptions:
              access_key:
                description: S3 access key id. Never shown in output.
                type: str
              secret_key:
                description: S3 secret key. Never shown in output.
                type: str
              session_token:
                description: S3 session token. Never shown in output.
                type: str
              iamauto:
                description: Use the AWS default credential chain instead of keys.
                type: bool
              url:
                description: S3 endpoint URL; omit for AWS.
                type: raw
              region:
                description: S3 region; V(false) or null mean unset, as in Anchore configs.
                type: raw
              bucket:
                description: Bucket, for C(s3) and C(rustfs).
                type: str
              create_bucket:
                description: Create the bucket when missing.
                type: bool
              prefix:
                description: Key prefix joined to every key with no separator, as Anchore does.
                type: str
              validate_certs:
                description:
                  - Verify TLS certificates; default true.
                  - V(false) turns verification off and is insecure (a machine in the path can read and change the
                    data and the credentials); for tests only. Prefer C(ca_bundle) for a private CA.
                type: bool
              ca_bundle:
                description: Absolute path of a CA bundle for TLS verification.
                type: path
              addressing_style:
                description: S3 addressing style; default C(path) when C(url) is set.
                type: str
                choices: [path, virtual, auto]
              multipart_threshold_mb:
                description: Objects above this size in MiB are uploaded in parts; default 8.
                type: int
              multipart_chunksize_mb:
                description: Part size in MiB for multipart uploads; default 8.
                type: int
              connect_timeout:
                description: Connect timeout in seconds.
                type: int
              read_timeout:
                description: Read timeout in seconds.
                type: int
              max_pool_connections:
                description: HTTP connection pool size; default 64.
                type: int
              endpoint:
                description: RustFS API endpoint, C(http://host:port) or C(https://host:port).
                type: str
              api_key_header:
                description: Header carrying the RustFS API key; default C(X-API-Key).
                type: str
              api_key:
                description: RustFS API key. Never shown in output.
                type: str
              timeout_seconds:
                description: RustFS request timeout in seconds; default 30.
                type: int
              archive_data_dir:
                description: Root directory of a C(localfs) store (absolute).
                type: path
      compression:
        description: Compression of stored objects, as in Anchore's C(compression) section.
        type: dict
        suboptions:
          enabled:
            description: Compress objects larger than C(min_size_kbytes) (zstd; Anchore's zlib in the anchore layout).
            type: bool
            default: false
          min_size_kbytes:
            description: Size threshold in KiB.
            type: int
            default: 100
      config_file:
        description: Read the spec from this application config file (absolute path) instead.
        type: path
      section:
        description: Section of C(config_file) to read.
        type: str
        choices: [object_store, archive, analysis_archive, artifact_store]
'''

    SOURCE_DEST = r'''
options:
  source:
    description:
      - The store to copy from, as an Anchore-shape spec, or C(config_file) and C(section).
    type: dict
    required: true
    suboptions:
      storage_driver:
        description: The driver and its configuration, as in Anchore's C(storage_driver) section.
        type: dict
        suboptions:
          name:
            description: C(db), C(db2), C(s3), C(rustfs) or C(localfs).
            type: str
            required: true
          config:
            description:
              - Driver configuration; each driver takes only its own keys.
              - C(s3) takes the keys of Anchore's s3 section plus TLS, addressing and tuning keys.
              - C(rustfs) takes C(endpoint), C(bucket), C(api_key_header), C(api_key), C(timeout_seconds),
                C(validate_certs), C(ca_bundle) and C(prefix).
              - C(localfs) takes C(archive_data_dir). C(db) and C(db2) take nothing (see O(db_connect)).
            type: dict
            suboptions:
              access_key:
                description: S3 access key id. Never shown in output.
                type: str
              secret_key:
                description: S3 secret key. Never shown in output.
                type: str
              session_token:
                description: S3 session token. Never shown in output.
                type: str
              iamauto:
                description: Use the AWS default credential chain instead of keys.
                type: bool
              url:
                description: S3 endpoint URL; omit for AWS.
                type: raw
              region:
                description: S3 region; V(false) or null mean unset, as in Anchore configs.
                type: raw
              bucket:
                description: Bucket, for C(s3) and C(rustfs).
                type: str
              create_bucket:
                description: Create the bucket when missing.
                type: bool
              prefix:
                description: Key prefix joined to every key with no separator, as Anchore does.
                type: str
              validate_certs:
                description:
                  - Verify TLS certificates; default true.
                  - V(false) turns verification off and is insecure (a machine in the path can read and change the
                    data and the credentials); for tests only. Prefer C(ca_bundle) for a private CA.
                type: bool
              ca_bundle:
                description: Absolute path of a CA bundle for TLS verification.
                type: path
              addressing_style:
                description: S3 addressing style; default C(path) when C(url) is set.
                type: str
                choices: [path, virtual, auto]
              multipart_threshold_mb:
                description: Objects above this size in MiB are uploaded in parts; default 8.
                type: int
              multipart_chunksize_mb:
                description: Part size in MiB for multipart uploads; default 8.
                type: int
              connect_timeout:
                description: Connect timeout in seconds.
                type: int
              read_timeout:
                description: Read timeout in seconds.
                type: int
              max_pool_connections:
                description: HTTP connection pool size; default 64.
                type: int
              endpoint:
                description: RustFS API endpoint, C(http://host:port) or C(https://host:port).
                type: str
              api_key_header:
                description: Header carrying the RustFS API key; default C(X-API-Key).
                type: str
              api_key:
                description: RustFS API key. Never shown in output.
                type: str
              timeout_seconds:
                description: RustFS request timeout in seconds; default 30.
                type: int
              archive_data_dir:
                description: Root directory of a C(localfs) store (absolute).
                type: path
      compression:
        description: Compression of stored objects, as in Anchore's C(compression) section.
        type: dict
        suboptions:
          enabled:
            description: Compress objects larger than C(min_size_kbytes) (zstd; Anchore's zlib in the anchore layout).
            type: bool
            default: false
          min_size_kbytes:
            description: Size threshold in KiB.
            type: int
            default: 100
      config_file:
        description: Read the spec from this application config file (absolute path) instead.
        type: path
      section:
        description: Section of C(config_file) to read.
        type: str
        choices: [object_store, archive, analysis_archive, artifact_store]
  dest:
    description:
      - The store to copy to, as an Anchore-shape spec, or C(config_file) and C(section).
    type: dict
    required: true
    suboptions:
      storage_driver:
        description: The driver and its configuration, as in Anchore's C(storage_driver) section.
        type: dict
        suboptions:
          name:
            description: C(db), C(db2), C(s3), C(rustfs) or C(localfs).
            type: str
            required: true
          config:
            description:
              - Driver configuration; each driver takes only its own keys.
              - C(s3) takes the keys of Anchore's s3 section plus TLS, addressing and tuning keys.
              - C(rustfs) takes C(endpoint), C(bucket), C(api_key_header), C(api_key), C(timeout_seconds),
                C(validate_certs), C(ca_bundle) and C(prefix).
              - C(localfs) takes C(archive_data_dir). C(db) and C(db2) take nothing (see O(db_connect)).
            type: dict
            suboptions:
              access_key:
                description: S3 access key id. Never shown in output.
                type: str
              secret_key:
                description: S3 secret key. Never shown in output.
                type: str
              session_token:
                description: S3 session token. Never shown in output.
                type: str
              iamauto:
                description: Use the AWS default credential chain instead of keys.
                type: bool
              url:
                description: S3 endpoint URL; omit for AWS.
                type: raw
              region:
                description: S3 region; V(false) or null mean unset, as in Anchore configs.
                type: raw
              bucket:
                description: Bucket, for C(s3) and C(rustfs).
                type: str
              create_bucket:
                description: Create the bucket when missing.
                type: bool
              prefix:
                description: Key prefix joined to every key with no separator, as Anchore does.
                type: str
              validate_certs:
                description:
                  - Verify TLS certificates; default true.
                  - V(false) turns verification off and is insecure (a machine in the path can read and change the
                    data and the credentials); for tests only. Prefer C(ca_bundle) for a private CA.
                type: bool
              ca_bundle:
                description: Absolute path of a CA bundle for TLS verification.
                type: path
              addressing_style:
                description: S3 addressing style; default C(path) when C(url) is set.
                type: str
                choices: [path, virtual, auto]
              multipart_threshold_mb:
                description: Objects above this size in MiB are uploaded in parts; default 8.
                type: int
              multipart_chunksize_mb:
                description: Part size in MiB for multipart uploads; default 8.
                type: int
              connect_timeout:
                description: Connect timeout in seconds.
                type: int
              read_timeout:
                description: Read timeout in seconds.
                type: int
              max_pool_connections:
                description: HTTP connection pool size; default 64.
                type: int
              endpoint:
                description: RustFS API endpoint, C(http://host:port) or C(https://host:port).
                type: str
              api_key_header:
                description: Header carrying the RustFS API key; default C(X-API-Key).
                type: str
              api_key:
                description: RustFS API key. Never shown in output.
                type: str
              timeout_seconds:
                description: RustFS request timeout in seconds; default 30.
                type: int
              archive_data_dir:
                description: Root directory of a C(localfs) store (absolute).
                type: path
      compression:
        description: Compression of stored objects, as in Anchore's C(compression) section.
        type: dict
        suboptions:
          enabled:
            description: Compress objects larger than C(min_size_kbytes) (zstd; Anchore's zlib in the anchore layout).
            type: bool
            default: false
          min_size_kbytes:
            description: Size threshold in KiB.
            type: int
            default: 100
      config_file:
        description: Read the spec from this application config file (absolute path) instead.
        type: path
      section:
        description: Section of C(config_file) to read.
        type: str
        choices: [object_store, archive, analysis_archive, artifact_store]
'''
