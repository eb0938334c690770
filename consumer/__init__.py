"""The ingestion microservice: every log topic in Kafka -> its MongoDB collection, in micro-batches.

Parts, each with one job and one delivery contract: decode, route, validate, batch, write,
offsets (commit), dead_letter, metrics; `service` wires them into the poll loop.
"""
