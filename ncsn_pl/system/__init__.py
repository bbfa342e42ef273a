"""The process and its files, no mathematics: files written whole or not at all and torch files checked before they
are unpickled (:mod:`.files`), locks on shared file systems (:mod:`.locks`), and errors the user can fix or that every
process raises together (:mod:`.errors`)."""
