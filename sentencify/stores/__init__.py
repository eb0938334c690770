"""One module per store after MongoDB: the rule that makes a value storable and readable there.

Every step that writes a store goes through that store's module (pipeline.md, opening: "a value
that MongoDB holds but the next store cannot is made storable by a documented rule"). Each module
also says which of its driver's errors are about the data written (isolated to the session at
fault and quarantined, sentencify.steps.quarantine) and which are about the store itself (the run
fails, as a store that is down must).
"""
