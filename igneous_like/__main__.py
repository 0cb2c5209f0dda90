from igneous_like.cli import main

main()
