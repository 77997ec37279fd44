from emocam.cli import main

raise SystemExit(main())
