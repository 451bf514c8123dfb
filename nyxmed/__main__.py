from nyxmed.cli import main

raise SystemExit(main())
