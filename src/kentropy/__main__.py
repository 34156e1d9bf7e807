from kentropy.cli import main

main()
