from inbox_asgi.cli import main

main()
