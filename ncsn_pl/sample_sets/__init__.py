"""The sample sets of the ``sample`` and ``fid`` commands: drawn (:mod:`.drawing`) on a Lightning predict loop sharded
over the processes, stored in a folder a rerun resumes, with what a set reports (:mod:`.store`), and scored
(:mod:`.scoring`)."""
