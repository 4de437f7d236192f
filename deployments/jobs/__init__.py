"""Offline Ray jobs: contrastive fine-tuning (Ray Train), batch embedding (Ray Data), the
synthetic shapes data and the embedded demo model trained on it.

Jobs sit beside serving/, not above it: they reuse protocol/, preprocess/ and backends/
(and the router's request code for OpenAI batch files) so that offline results equal
served ones; nothing in serving/ imports them. torch is imported here, in the job
processes, never by the router or config validation.
"""
