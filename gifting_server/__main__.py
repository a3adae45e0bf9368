from gifting_server.cli import main

raise SystemExit(main())
