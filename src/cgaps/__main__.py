from cgaps.cli.main import main

main()
