print('hello from Python')
