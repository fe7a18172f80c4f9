from clad_lite.cli import main

raise SystemExit(main())
