from authbroker.cli import main

raise SystemExit(main())
