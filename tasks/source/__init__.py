"""Reading a source: the file checks, its rows streamed and normalised (a bad row is a reject
with a reason), and a folder of generated images turned into rows. Used by ``download`` and
``plan``. No Prefect."""
