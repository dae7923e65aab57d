"""The contract between control_api, stream_worker and downstream consumers.

Pure: msgspec structs, enums, topic rules, AMQP names and SQLAlchemy tables. Nothing here does I/O, reads
settings or logs, so any process (or a consumer) can import it without side effects.
"""
