import sys

# sweep and compare need no Lightning: dispatch before importing it
TOOLS = {"sweep": "ncsn_pl.sweep", "compare": "ncsn_pl.compare"}  # as in ncsn_pl.cli.TOOLS

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in TOOLS:
        import importlib

        importlib.import_module(TOOLS[sys.argv[1]]).main(sys.argv[2:])
        sys.exit(0)
    from ncsn_pl.cli import main

    main()
