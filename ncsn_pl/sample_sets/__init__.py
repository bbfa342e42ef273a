"""The sample sets of the ``sample`` and ``fid`` commands: drawn (:mod:`.drawing`) on a Lightning predict loop sharded
over the processes (:mod:`.predict_loop`), stored in a folder a rerun resumes (:mod:`.store`), scored
(:mod:`.scoring`), and what a set reports (:mod:`.reports`)."""
