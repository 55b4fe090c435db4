from headstart.cli.main import main

main()
