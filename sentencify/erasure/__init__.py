"""Erasing a user from every store and keeping them erased (pipeline.md, "Personal data: erasure and suppression").

`keys`: the keyed hash (HMAC-SHA-256 with ERASURE_KEY) that is all the platform keeps of an erased id;
`suppression`: the list of those hashes and the checks the consumer, the replay and the steps make;
`forget`: the erasure itself. None of it knows Airflow.
"""
