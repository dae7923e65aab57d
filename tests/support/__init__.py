"""Test support: per-test PostgreSQL databases and RabbitMQ vhosts, a TCP fault proxy, waiting helpers."""
