from mediapulse.cli import main

raise SystemExit(main())
