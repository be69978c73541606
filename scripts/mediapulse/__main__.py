from mediapulse.cli.main import main

raise SystemExit(main())
