from retailctl.cli import main

main()
